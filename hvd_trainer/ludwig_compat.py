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
        "proc_column": ANY, "num_fc_layers": (0,), "fc_layers": (None, []), "output_size": ANY,
        "use_bias": ANY, "weights_initializer": ANY, "bias_initializer": ANY, "activation": ANY,
        "norm": ANY, "norm_params": ANY, "dropout": ANY, "class_similarities": (None,),
    },
    "loss": {"class_weights": (None, 1, 1.0), "robust_lambda": (0,), "confidence_penalty": (0,),
             "class_similarities": (None,), "class_similarities_temperature": (0,),
             "positive_class_weight": (None, 1, 1.0), "label_smoothing": (0,)},
    "decoder": {"num_fc_layers": (0,), "fc_layers": (None, []), "fc_output_size": ANY, "fc_use_bias": ANY,
                "fc_weights_initializer": ANY, "fc_bias_initializer": ANY, "fc_norm": ANY, "fc_norm_params": ANY,
                "fc_activation": ANY, "fc_dropout": ANY, "use_bias": (True,), "weights_initializer": ("xavier_uniform",),
                "bias_initializer": ("zeros",), "input_size": ANY, "num_classes": ANY},
    "combiner": {"norm_params": (None,), "residual": (False,), "weights_initializer": ("xavier_uniform",),
                 "bias_initializer": ("zeros",)},
    "fc_layer": {"weights_initializer": ("xavier_uniform",), "bias_initializer": ("zeros",), "norm_params": (None,)},
    "preprocessing": {"sample_size": (None,), "oversample_minority": (None,), "undersample_majority": (None,),
                      "global_max_sequence_length": (None,), "force_split": (False,), "stratify": (None,)},
}

#: {section: {key Ludwig's schema lets through and never reads: what to use instead}}; accepted with a warning.
IGNORED_KEYS: Dict[str, Dict[str, str]] = {
    "output_feature": {"weight_regularization": "trainer.regularization_type and trainer.regularization_lambda"},
}

#: {dotted key: values Ludwig accepts that hvd_trainer refuses}
LUDWIG_ONLY_VALUES: Dict[str, Tuple[str, ...]] = {
    "preprocessing.missing_value_strategy": ("bfill", "ffill"),
    "combiner.type": ("sequence_concat", "sequence", "comparator", "transformer", "tabtransformer",
                      "project_aggregate"),
    "split.type": ("stratify", "datetime", "hash"),
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


def drop_ignored_keys(data: Mapping[str, Any], path: str, table: Mapping[str, str]) -> Dict[str, Any]:
    """Copy of `data` without the keys of `table`, each dropped with one warning naming what to use instead."""
    out = dict(data)
    for key, instead in table.items():
        if key in out:
            value = out.pop(key)
            logger.warning("%s.%s (%r) is ignored, as Ludwig ignores it; use %s instead.", path, key, value, instead)
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
