"""The model part of the config: input_features, output_features, combiner, preprocessing.

A Ludwig (ECD) config that uses number, category, binary, set, text, vector and date features loads
unchanged. Every key is checked before any work starts:

- keys hvd_trainer implements are typed dataclass fields (unknown keys get a "did you mean");
- keys Ludwig has but hvd_trainer does not implement are refused as "not supported by
  hvd_trainer", unless their value is one that changes nothing (hvd_trainer.ludwig_compat);
- values Ludwig allows but hvd_trainer does not (a `text` feature, `normalization: log1p`,
  `missing_value_strategy: bfill`) are refused the same way, naming what is supported.

Each feature's settings come from its type in hvd_trainer.features. Both hvd_trainer.data and
hvd_trainer.models read this config; the `trainer` and `distributed` sections are validated by
hvd_trainer.config.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from hvd_trainer.config_schema import did_you_mean, from_dict, to_dict
from hvd_trainer.errors import ConfigError
from hvd_trainer.feature_defaults import with_defaults_applied
from hvd_trainer.features import FEATURE_TYPES, FeatureType, feature_type
from hvd_trainer.features.config import (ACTIVATIONS, NORMS, FCLayerConfig, FeatureConfig, OutputFeatureConfig,
                                         config_field, resolve_layers)
from hvd_trainer.ludwig_compat import (LUDWIG_ONLY_VALUES, LUDWIG_OTHER_FEATURE_TYPES, NOOP_KEYS, check_ludwig_value,
                                       drop_noop_keys, not_supported, strip_deprecated_keys, unsupported_section)
from hvd_trainer.tabnet_config import TabNetCombinerConfig, tabnet_config

logger = logging.getLogger(__name__)

#: Top-level keys that belong to other sections or carry no model meaning.
OTHER_TOP_LEVEL_KEYS = ("trainer", "distributed", "model_type", "ludwig_version", "backend")
MODEL_KEYS = ("input_features", "output_features", "combiner", "preprocessing", "defaults")
RESERVED_PREFIX = "__"
COMBINER_TYPES = ("concat", "tabnet")


# ---- combiner and global preprocessing -------------------------------------------------------------
@dataclass
class CombinerConfig:
    type: str = config_field("concat", "concat (this section) or tabnet (TabNetCombinerConfig).",
                             choices=COMBINER_TYPES)
    num_fc_layers: int = config_field(0, "Fully connected layers after the concatenation (fc_layers overrides).",
                                      min=0)
    output_size: int = config_field(256, "Width of each fully connected layer.", min=1)
    dropout: float = config_field(0.0, "Dropout after each layer's activation.", min=0, max=0.999)
    activation: str = config_field("relu", "Activation of each layer.", choices=ACTIVATIONS)
    norm: Optional[str] = config_field(None, "batch or layer normalization (null: none).", choices=NORMS)
    use_bias: bool = config_field(True, "Give the layers a bias.")
    flatten_inputs: bool = config_field(False, "Accepted for Ludwig compatibility; encodings here are already flat.")
    fc_layers: Optional[List[FCLayerConfig]] = config_field(None, "Per-layer settings; overrides num_fc_layers.")

    def layer_specs(self) -> List[FCLayerConfig]:
        """The fully connected layers, with every setting resolved."""
        return resolve_layers(self.fc_layers, self.num_fc_layers, self.output_size, self.activation, self.dropout,
                              self.norm, self.use_bias)


SPLIT_TYPES = ("random", "fixed", "stratify", "datetime")


@dataclass
class SplitConfig:
    type: str = config_field("random", "random, fixed (a column of 0/1/2), stratify (by a column's classes) or "
                             "datetime (oldest rows for training).", choices=SPLIT_TYPES)
    probabilities: Tuple[float, float, float] = config_field((0.7, 0.1, 0.2),
                                                             "Training, validation and test shares (not fixed).")
    column: Optional[str] = config_field(None, "The split column (fixed: default 'split'; stratify, datetime: "
                                         "required).")
    datetime_format: Optional[str] = config_field(None, "strftime format of a datetime column (null: ISO 8601).")

    def __post_init__(self):
        if any(p < 0 for p in self.probabilities) or abs(sum(self.probabilities) - 1.0) > 1e-6:
            raise ValueError(
                f"split.probabilities is {list(self.probabilities)}, but it must be three non-negative shares "
                "(training, validation, test) that add up to 1, e.g. [0.7, 0.1, 0.2]."
            )
        if self.probabilities[0] <= 0:
            raise ValueError(
                "split.probabilities gives the training set a share of 0; give it a positive share, e.g. [0.7, 0.1, 0.2]."
            )
        if self.type == "random" and self.column is not None:
            raise ValueError(
                f"split.column ({self.column!r}) is not used by the random split; remove it or set split.type to "
                "fixed, stratify or datetime."
            )
        if self.type in ("stratify", "datetime") and not self.column:
            raise ValueError(
                f"split.type {self.type} needs split.column: the column whose "
                f"{'classes keep their shares in every split' if self.type == 'stratify' else 'dates order the rows'}."
            )
        if self.datetime_format is not None and self.type != "datetime":
            raise ValueError("split.datetime_format is only used by split.type: datetime; remove it.")

    @property
    def column_name(self) -> str:
        return self.column or "split"


@dataclass
class PreprocessingConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    sample_ratio: float = config_field(1.0, "Share of the rows used (drawn per row from the seed).", gt=0, max=1)
    oversample_minority: Optional[float] = config_field(
        None, "Resample the minority class of the binary target to this ratio of the majority (training set).",
        gt=0)
    undersample_majority: Optional[float] = config_field(
        None, "Keep minority / this many rows of the majority class of the binary target (training set).", gt=0)

    def __post_init__(self):
        if self.oversample_minority and self.undersample_majority:
            raise ValueError(
                "preprocessing sets both oversample_minority and undersample_majority; they are two ways of balancing "
                "the classes and Ludwig allows only one. Keep one of them."
            )


# ---- the model config ------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """The model keys of a config file, validated; build it with ModelConfig.from_dict.

    Each feature is the input_config or output_config dataclass of its type (hvd_trainer.features).
    """

    input_features: List[FeatureConfig]
    output_features: List[OutputFeatureConfig]
    combiner: Union[CombinerConfig, TabNetCombinerConfig] = field(default_factory=CombinerConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "ModelConfig":
        """Validate the model keys of a whole config (trainer/distributed are left to their loaders)."""
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"The config must be a mapping with keys such as input_features and output_features, but it "
                f"is {type(config).__name__}."
            )
        _check_top_level(config)
        config = with_defaults_applied(strip_deprecated_keys(config))
        _check_defaults(config.get("defaults") or {})
        inputs = _features(config, "input_features")
        outputs = _features(config, "output_features")
        _check_names(inputs, outputs)
        combiner = _combiner(config.get("combiner"))
        preprocessing = _preprocessing(config.get("preprocessing"))
        _check_balancing(preprocessing, outputs)
        _check_split_column(preprocessing.split, inputs + outputs)
        return cls(inputs, outputs, combiner, preprocessing)

    def to_dict(self) -> Dict[str, Any]:
        return to_dict(self)

    @property
    def features(self) -> List[FeatureConfig]:
        return list(self.input_features) + list(self.output_features)


def _mapping(value: Any, path: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{path} must be a mapping of keys to values, but it is {type(value).__name__} ({value!r}). "
            f"Write it as '{path}: {{key: value, ...}}' or leave it out for the defaults."
        )
    return dict(value)


def _check_top_level(config: Mapping[str, Any]) -> None:
    allowed = MODEL_KEYS + OTHER_TOP_LEVEL_KEYS
    for key, value in config.items():
        if key == "hyperopt":
            if value in (None, {}):
                continue
            raise unsupported_section(key, "hyperparameter search (run one training per setting instead)")
        if key not in allowed:
            raise ConfigError(
                f"Unknown top-level key {key!r} in the config.{did_you_mean(key, allowed)} The allowed top-level "
                f"keys are: {', '.join(allowed)}."
            )
    model_type = config.get("model_type", "ecd")
    if model_type != "ecd":
        raise not_supported("model_type", model_type, "Only ecd (the default) is implemented.")
    if config.get("backend") not in (None, {}):
        logger.warning("The config's backend section is ignored: hvd_trainer always runs on Horovod or locally, "
                       "as set by the distributed section.")


def _features(config: Mapping[str, Any], key: str) -> List[FeatureConfig]:
    raw = config.get(key)
    kind = "input" if key == "input_features" else "output"
    if not raw:
        raise ConfigError(
            f"The config has no {key}; a model needs at least one {kind} feature, e.g. "
            f"'{key}: [{{name: x, type: {'number' if kind == 'input' else 'category'}}}]'."
        )
    if not isinstance(raw, list):
        raise ConfigError(f"{key} must be a list of features ({{name: ..., type: ...}}), but it is {type(raw).__name__}.")
    return [_feature(item, f"{key}[{i}]", kind) for i, item in enumerate(raw)]


def _feature(item: Any, path: str, kind: str) -> FeatureConfig:
    data = _mapping(item, path)
    name, ftype = data.get("name"), data.get("type")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path} has no name; every feature needs 'name: <column name>' (a non-empty string).")
    if name.startswith(RESERVED_PREFIX):
        raise ConfigError(f"{path}.name is {name!r}; names starting with '__' are reserved for hvd_trainer. Rename the feature.")
    where = f"{kind.capitalize()} feature {name!r} ({path})"
    types = ", ".join(FEATURE_TYPES)
    if ftype is None:
        raise ConfigError(f"{where} has no type; add 'type:' with one of: {types}.")
    if ftype in LUDWIG_OTHER_FEATURE_TYPES:
        raise not_supported(f"{path}.type", ftype, f"Supported feature types: {types}.")
    if ftype not in FEATURE_TYPES:
        raise ConfigError(
            f"{path}.type is {ftype!r}, which is not a feature type.{did_you_mean(ftype, FEATURE_TYPES)} "
            f"Use one of: {types}."
        )
    spec = feature_type(ftype)
    data = _feature_sections(drop_noop_keys(data, path, NOOP_KEYS[f"{kind}_feature"]), path, kind, spec)
    try:
        return from_dict(spec.input_config if kind == "input" else spec.output_config, data, path)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _feature_sections(data: Dict[str, Any], path: str, kind: str, spec: FeatureType) -> Dict[str, Any]:
    """The feature's preprocessing/encoder/loss/decoder sections, without harmless Ludwig keys, checked."""
    data = _fold_flat_encoder(data, path) if kind == "input" else _fold_flat_decoder(data, path)
    config_cls = spec.input_config if kind == "input" else spec.output_config
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for section in ("preprocessing", "encoder", "loss", "decoder"):
        if section in data:
            noop = spec.ludwig_noop_keys.get(section, {}) if section in ("preprocessing", "encoder") \
                else NOOP_KEYS[section]
            if section in fields:  # a key the section implements is read, never dropped as harmless
                noop = {k: v for k, v in noop.items() if k not in _field_names(fields[section])}
            sub = drop_noop_keys(_mapping(data[section], f"{path}.{section}"), f"{path}.{section}", noop)
            _check_section_values(sub, f"{path}.{section}", spec, section)
            if isinstance(sub.get("fc_layers"), list):
                sub["fc_layers"] = [drop_noop_keys(_mapping(l, f"{path}.{section}.fc_layers[{i}]"),
                                                   f"{path}.{section}.fc_layers[{i}]", NOOP_KEYS["fc_layer"])
                                    for i, l in enumerate(sub["fc_layers"])]
            data[section] = sub
    return data


def _field_names(f: dataclasses.Field) -> set:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
    return {g.name for g in dataclasses.fields(default)} if dataclasses.is_dataclass(default) else set()


#: Keys older Ludwig wrote on the output feature itself -> their names inside `decoder` (Ludwig's own upgrade).
FLAT_DECODER_KEYS = {"fc_layers": "fc_layers", "num_fc_layers": "num_fc_layers", "output_size": "fc_output_size",
                     "activation": "fc_activation", "dropout": "fc_dropout", "norm": "fc_norm",
                     "use_bias": "fc_use_bias"}


def _fold_flat_decoder(data: Dict[str, Any], path: str) -> Dict[str, Any]:
    """`fc_layers: [...]` on an output feature means its decoder's fc_layers (a key set in decoder wins)."""
    flat = [k for k in FLAT_DECODER_KEYS if k in data]
    if flat or isinstance(data.get("decoder"), str):
        decoder = data.get("decoder")
        decoder = {"type": decoder} if isinstance(decoder, str) else _mapping(decoder, f"{path}.decoder")
        for key in flat:
            decoder.setdefault(FLAT_DECODER_KEYS[key], data.pop(key))
        data["decoder"] = decoder
    return data


def _fold_flat_encoder(data: Dict[str, Any], path: str) -> Dict[str, Any]:
    """Older Ludwig writes `encoder: dense` and puts the encoder's settings on the feature itself."""
    flat_keys = ("embedding_size", "embeddings_trainable", "dropout", "representation", "pretrained_embeddings",
                 "embeddings_on_cpu")
    encoder = data.get("encoder")
    if isinstance(encoder, str) or any(k in data for k in flat_keys):
        encoder = {"type": encoder} if isinstance(encoder, str) else _mapping(encoder, f"{path}.encoder")
        for key in flat_keys:
            if key in data:
                value = data.pop(key)
                if key == "representation":
                    if value not in ("dense", "sparse"):
                        raise ConfigError(f"{path}.representation is {value!r}; use dense or sparse.")
                    encoder.setdefault("type", value)
                else:
                    encoder.setdefault(key, value)
        data["encoder"] = encoder
    return data


def _check_section_values(sub: Dict[str, Any], path: str, spec: FeatureType, section: str) -> None:
    if section == "preprocessing":
        check_ludwig_value(LUDWIG_ONLY_VALUES["preprocessing.missing_value_strategy"], f"{path}.missing_value_strategy",
                           sub.get("missing_value_strategy"), spec.missing_value_strategies)
    for dotted, (refused, supported) in spec.ludwig_only_values.items():
        key_section, key = dotted.split(".")
        if key_section == section:
            check_ludwig_value(refused, f"{path}.{key}", sub.get(key), supported)
    if section == "loss":
        ltype = sub.get("type")
        if ltype is not None and ltype != spec.default_loss:
            raise not_supported(f"{path}.type", ltype, f"A {spec.name} output uses {spec.default_loss}.")
    elif section == "decoder":
        dtype = sub.get("type")
        if dtype is not None and dtype != spec.default_decoder:
            raise not_supported(f"{path}.type", dtype,
                                f"A {spec.name} output uses the {spec.default_decoder} decoder (one linear layer).")


def _check_defaults(defaults: Mapping[str, Any]) -> None:
    """Check each implemented type's defaults as a feature would be checked (a typo there is an error too)."""
    for ftype, entry in defaults.items():
        if ftype not in FEATURE_TYPES:
            continue  # defaults of a type no feature can use change nothing (features of it are refused)
        name = f"defaults.{ftype}"
        inputs = {k: v for k, v in entry.items() if k in ("preprocessing", "encoder")}
        outputs = {k: v for k, v in entry.items() if k in ("decoder", "loss")}
        if inputs:
            _feature({"name": name, "type": ftype, **inputs}, name, "input")
        if outputs:  # (some types, text among them, cannot be outputs: their defaults name no decoder)
            _feature({"name": name, "type": ftype, **outputs}, name, "output")


def _check_balancing(preprocessing: "PreprocessingConfig", outputs: List[FeatureConfig]) -> None:
    """Ludwig balances classes only for one binary output (its config checks say the same)."""
    key = "oversample_minority" if preprocessing.oversample_minority else \
        "undersample_majority" if preprocessing.undersample_majority else None
    if key is None:
        return
    if len(outputs) != 1 or outputs[0].type != "binary":
        found = ", ".join(f"{f.name!r} ({f.type})" for f in outputs)
        raise ConfigError(
            f"preprocessing.{key} balances the classes of a single binary output feature, but the config's output "
            f"features are {found}. Remove preprocessing.{key}, or (for a category target) weigh the classes with "
            "the output's loss.class_weights."
        )


def _check_split_column(split: "SplitConfig", features: List[FeatureConfig]) -> None:
    """Ludwig's splitter checks: a stratify column that is a feature is binary or category; a datetime one, a date."""
    wanted = {"stratify": ("binary", "category"), "datetime": ("date",)}.get(split.type)
    using = [f for f in features if f.column_name == split.column]
    if wanted and using and using[0].type not in wanted:
        raise ConfigError(
            f"preprocessing.split.column {split.column!r} is the {using[0].type} feature {using[0].name!r}, but a "
            f"{split.type} split needs a {' or '.join(wanted)} column (Ludwig's rule). Split by another column, or "
            "use split.type random."
        )


def _check_names(inputs: List[FeatureConfig], outputs: List[FeatureConfig]) -> None:
    seen: Dict[str, str] = {}
    for kind, features in (("input_features", inputs), ("output_features", outputs)):
        for f in features:
            if f.name in seen:
                raise ConfigError(
                    f"The feature name {f.name!r} appears twice (in {seen[f.name]} and {kind}); names must be "
                    "unique. Rename one, and use 'column:' if both read the same column."
                )
            seen[f.name] = kind


def _combiner(raw: Any) -> Union[CombinerConfig, TabNetCombinerConfig]:
    data = drop_noop_keys(_mapping(raw, "combiner"), "combiner", NOOP_KEYS["combiner"])
    check_ludwig_value(LUDWIG_ONLY_VALUES["combiner.type"], "combiner.type", data.get("type"), COMBINER_TYPES)
    if data.get("type") == "tabnet":
        return tabnet_config(data)
    if isinstance(data.get("fc_layers"), list):
        data["fc_layers"] = [
            drop_noop_keys(_mapping(l, f"combiner.fc_layers[{i}]"), f"combiner.fc_layers[{i}]", NOOP_KEYS["fc_layer"])
            for i, l in enumerate(data["fc_layers"])
        ]
    return from_dict(CombinerConfig, data, "combiner")


def _preprocessing(raw: Any) -> PreprocessingConfig:
    data = drop_noop_keys(_mapping(raw, "preprocessing"), "preprocessing", NOOP_KEYS["preprocessing"])
    if data.get("stratify", None) is None:
        data.pop("stratify", None)
    else:  # older Ludwig: a column name here meant a stratified split
        if "split" in data:
            raise ConfigError("preprocessing has both stratify (older Ludwig) and split; keep only "
                              "split: {type: stratify, column: ...}.")
        data["split"] = {"type": "stratify", "column": data.pop("stratify"),
                         **({"probabilities": data.pop("split_probabilities")} if "split_probabilities" in data else {})}
    if "split_probabilities" in data:  # Ludwig before 0.6 wrote the random split's shares here
        if "split" in data:
            raise ConfigError(
                "preprocessing has both split_probabilities (older Ludwig) and split; keep only "
                "split: {type: random, probabilities: [...]}."
            )
        data["split"] = {"type": "random", "probabilities": data.pop("split_probabilities")}
    if "split" in data:
        split = _mapping(data["split"], "preprocessing.split")
        check_ludwig_value(LUDWIG_ONLY_VALUES["split.type"], "preprocessing.split.type", split.get("type"),
                           SPLIT_TYPES)
        data["split"] = split
    return from_dict(PreprocessingConfig, data, "preprocessing")
