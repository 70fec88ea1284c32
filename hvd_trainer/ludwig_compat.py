"""Ludwig config keys and values that hvd_trainer ignores or refuses, outside any one feature type.

Ludwig writes many keys when it saves a fully rendered config (e.g. `loss.class_weights: null`).
A key whose value changes nothing here is dropped; any other value of it is refused as "not
supported by hvd_trainer", naming what is accepted. Each feature type declares its own such
keys and values (FeatureType.ludwig_noop_keys, ludwig_only_values); this module holds the rest
and the checks that apply both.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Sequence, Tuple

from hvd_trainer.errors import ConfigError
from hvd_trainer.features.base import ANY

logger = logging.getLogger(__name__)

#: Feature types Ludwig has and hvd_trainer does not implement.
LUDWIG_OTHER_FEATURE_TYPES = ("sequence", "bag", "image", "audio", "h3", "timeseries", "category_distribution")

#: {section: {key: values that are harmless here (the key is then dropped), or ANY}}
NOOP_KEYS: Dict[str, Dict[str, Any]] = {
    "input_feature": {"tied": (None,), "proc_column": ANY, "active": (True,)},
    "output_feature": {
        "dependencies": (None, []), "reduce_input": ANY, "reduce_dependencies": ANY, "calibration": (False,),
        "clip": (None,), "default_validation_metric": ANY, "input_size": ANY, "num_classes": ANY,
        "proc_column": ANY, "weights_initializer": ANY, "bias_initializer": ANY, "norm_params": ANY,
        "class_similarities": (None,),
    },
    "loss": {"class_weights": (None, 1, 1.0), "robust_lambda": (0,), "confidence_penalty": (0,),
             "class_similarities": (None,), "class_similarities_temperature": (0,),
             "positive_class_weight": (None, 1, 1.0), "label_smoothing": (0,)},
    "decoder": {"fc_weights_initializer": ANY, "fc_bias_initializer": ANY, "fc_norm_params": ANY,
                "use_bias": (True,), "weights_initializer": ("xavier_uniform",), "bias_initializer": ("zeros",),
                "input_size": ANY, "num_classes": ANY},
    "combiner": {"norm_params": (None,), "residual": (False,), "weights_initializer": ("xavier_uniform",),
                 "bias_initializer": ("zeros",)},
    "fc_layer": {"weights_initializer": ("xavier_uniform",), "bias_initializer": ("zeros",), "norm_params": (None,)},
    "preprocessing": {"sample_size": (None,), "global_max_sequence_length": (None,), "force_split": (False,)},
}

#: Keys older Ludwig configs carry that Ludwig no longer reads: {key: what to use instead}. They are
#: accepted anywhere in a feature, its encoder or decoder, the combiner or a layer, with one warning per key.
DEPRECATED_KEYS: Dict[str, str] = {
    "weight_regularization": "trainer.regularization_type and trainer.regularization_lambda",
    "bias_regularization": "trainer.regularization_type and trainer.regularization_lambda",
    "activity_regularization": "trainer.regularization_type and trainer.regularization_lambda",
    "regularize": "trainer.regularization_lambda (0 turns the penalty off)",
}

#: {dotted key: values Ludwig accepts that hvd_trainer refuses}
LUDWIG_ONLY_VALUES: Dict[str, Tuple[str, ...]] = {
    "preprocessing.missing_value_strategy": ("bfill", "ffill"),
    "combiner.type": ("sequence_concat", "sequence", "comparator", "transformer", "tabtransformer",
                      "project_aggregate"),
    "split.type": ("hash",),
}


def not_supported(key: str, value: Any, allowed: str) -> ConfigError:
    """The error for a Ludwig option (a key with this value) that hvd_trainer does not implement."""
    return ConfigError(
        f"{key} is {value!r}: this Ludwig option is not supported by hvd_trainer. {allowed} Remove the key or "
        "change the value; hvd_trainer implements Ludwig's ECD model for number, category, binary, set, text, "
        "vector and date features."
    )


def unsupported_section(key: str, what: str) -> ConfigError:
    """The error for a whole Ludwig section that hvd_trainer has no counterpart of."""
    return ConfigError(
        f"The config has a {key} section: this Ludwig option is not supported by hvd_trainer, which has no "
        f"{what}. Remove the {key} section."
    )


def drop_noop_keys(data: Mapping[str, Any], path: str, table: Mapping[str, Any]) -> Dict[str, Any]:
    """Copy of `data` without the keys of `table` whose value is harmless; refuse the others."""
    out = {}
    for key, value in data.items():
        if key not in table:
            out[key] = value
            continue
        accepted = table[key]
        if accepted is ANY or any(_same(value, a) for a in accepted):
            continue
        shown = " or ".join("null" if a is None else repr(a) for a in accepted)
        raise not_supported(f"{path}.{key}", value, f"Only {shown} (which changes nothing) is accepted for it.")
    return out


def _same(value: Any, accepted: Any) -> bool:
    """Equality that keeps true/false apart from 1/0 (YAML `false` is not `robust_lambda: 0`)."""
    if isinstance(value, bool) or isinstance(accepted, bool):
        return value is accepted
    return value == accepted


def check_ludwig_value(refused: Sequence[Any], key: str, value: Any, supported: Sequence[Any]) -> None:
    """Refuse `value` of `key` when it is one of Ludwig's values that hvd_trainer lacks."""
    if value in refused:
        raise not_supported(key, value, f"Supported values: {', '.join(map(str, supported))}.")


def strip_deprecated_keys(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of the config without DEPRECATED_KEYS, after one warning per key naming where it was and what to use."""
    found: Dict[str, List[str]] = {}

    def strip(node: Any, path: str) -> Any:
        if not isinstance(node, Mapping):
            return node
        out = {}
        for key, value in node.items():
            if key in DEPRECATED_KEYS:
                found.setdefault(key, []).append(f"{path}.{key}" if path else key)
            else:
                out[key] = value
        return out

    out = dict(config)
    for kind in ("input_features", "output_features"):
        if isinstance(out.get(kind), list):
            out[kind] = [_strip_feature(strip, f, f"{kind}[{i}]") for i, f in enumerate(out[kind])]
    if isinstance(out.get("combiner"), Mapping):
        combiner = strip(out["combiner"], "combiner")
        if isinstance(combiner.get("fc_layers"), list):
            combiner["fc_layers"] = [strip(l, f"combiner.fc_layers[{i}]") for i, l in enumerate(combiner["fc_layers"])]
        out["combiner"] = combiner
    for key, paths in found.items():
        logger.warning("%s (at %s) is a key of older Ludwig configs that Ludwig no longer reads; hvd_trainer accepts "
                       "and ignores it too. Use %s instead, and remove it to silence this warning.",
                       key, ", ".join(paths), DEPRECATED_KEYS[key])
    return out


def _strip_feature(strip: Callable[[Any, str], Any], feature: Any, path: str) -> Any:
    feature = strip(feature, path)
    if isinstance(feature, dict):
        for section in ("encoder", "decoder"):
            if isinstance(feature.get(section), Mapping):
                feature[section] = strip(feature[section], f"{path}.{section}")
    return feature
