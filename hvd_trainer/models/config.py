"""The model part of the config: input_features, output_features, combiner, preprocessing.

A Ludwig (ECD) config that uses number, category and binary features loads unchanged. Every
key is checked before any work starts:

- keys hvd_trainer implements are typed dataclass fields (unknown keys get a "did you mean");
- keys Ludwig has but hvd_trainer does not implement are refused as "not supported by
  hvd_trainer", unless their value is one that changes nothing (Ludwig writes many such keys
  when it saves a fully rendered config, e.g. `loss.class_weights: null`);
- values Ludwig allows but hvd_trainer does not (a `text` feature, `normalization: log1p`,
  `missing_value_strategy: bfill`) are refused the same way, naming what is supported.

The `trainer` and `distributed` sections are validated by hvd_trainer.config.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from hvd_trainer.config_schema import did_you_mean, from_dict, to_dict
from hvd_trainer.errors import ConfigError

logger = logging.getLogger(__name__)

UNK = "<UNK>"
FEATURE_TYPES = ("number", "category", "binary")
LUDWIG_OTHER_FEATURE_TYPES = ("text", "sequence", "set", "bag", "vector", "image", "audio", "date", "h3",
                              "timeseries", "category_distribution")
MISSING_VALUE_STRATEGIES = {
    "number": ("fill_with_const", "fill_with_mean", "fill_with_mode", "drop_row"),
    "category": ("fill_with_const", "fill_with_mode", "drop_row"),
    "binary": ("fill_with_false", "fill_with_true", "fill_with_const", "fill_with_mode", "drop_row"),
}
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "leakyRelu", "gelu", "selu", "linear")
NORMS = ("batch", "layer")
DEFAULT_LOSS = {"category": "softmax_cross_entropy", "binary": "binary_weighted_cross_entropy",
                "number": "mean_squared_error"}
DEFAULT_DECODER = {"category": "classifier", "binary": "regressor", "number": "regressor"}
#: Top-level keys that belong to other sections or carry no model meaning.
OTHER_TOP_LEVEL_KEYS = ("trainer", "distributed", "model_type", "ludwig_version", "backend")
MODEL_KEYS = ("input_features", "output_features", "combiner", "preprocessing")
RESERVED_PREFIX = "__"

ANY = object()  # a Ludwig key whose value never matters here (Ludwig fills it in itself)


def _f(default, help: str, **meta):
    """A dataclass field with an immutable default and its one-line help (shown in errors)."""
    return field(default=default, metadata={"help": help, **meta})


# ---- Ludwig keys and values that hvd_trainer does not implement ----------------------------
# {key: values that are harmless here (the key is then dropped), or ANY}
_NOOP_KEYS: Dict[str, Dict[str, Any]] = {
    "input_feature": {"tied": (None,), "proc_column": ANY, "active": (True,)},
    "output_feature": {
        "dependencies": (None, []), "reduce_input": ANY, "reduce_dependencies": ANY, "calibration": (False,),
        "clip": (None,), "default_validation_metric": ANY, "input_size": ANY, "num_classes": ANY,
        "proc_column": ANY, "num_fc_layers": (0,), "fc_layers": (None, []), "output_size": ANY,
        "use_bias": ANY, "weights_initializer": ANY, "bias_initializer": ANY, "activation": ANY,
        "norm": ANY, "norm_params": ANY, "dropout": ANY, "class_similarities": (None,),
    },
    "number.preprocessing": {"computed_fill_value": ANY, "outlier_strategy": (None,), "outlier_threshold": ANY},
    "category.preprocessing": {"computed_fill_value": ANY, "cache_encoder_embeddings": (False,),
                               "most_common_percentile": ANY},
    "binary.preprocessing": {"computed_fill_value": ANY},
    "category.encoder": {"pretrained_embeddings": (None,), "embeddings_on_cpu": ANY, "embedding_initializer": (None,),
                         "vocab": ANY, "skip": (False,), "weights_initializer": (None,)},
    "number.encoder": {"skip": (False,)},
    "binary.encoder": {"skip": (False,)},
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
# {dotted key within a section: values Ludwig accepts that hvd_trainer refuses}
_LUDWIG_ONLY_VALUES: Dict[str, Tuple[str, ...]] = {
    "number.preprocessing.normalization": ("log1p", "iq"),
    "preprocessing.missing_value_strategy": ("bfill", "ffill"),
    "number.encoder.type": ("dense",),
    "binary.encoder.type": ("dense",),
    "category.encoder.type": ("passthrough",),
    "combiner.type": ("sequence_concat", "sequence", "tabnet", "comparator", "transformer", "tabtransformer",
                      "project_aggregate"),
    "split.type": ("stratify", "datetime", "hash"),
    "category.loss.type": ("sampled_softmax_cross_entropy",),
    "number.loss.type": ("mean_absolute_error", "root_mean_squared_error", "root_mean_squared_percentage_error",
                         "huber", "mean_absolute_percentage_error"),
    "binary.loss.type": (),
}


def _not_supported(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(
        f"{key} is {value!r}: this Ludwig option is not supported by hvd_trainer. {allowed} Remove the key or "
        "change the value; hvd_trainer implements Ludwig's ECD model for number, category and binary features."
    )


def _unsupported_section(key: str, what: str) -> ConfigError:
    return ConfigError(
        f"The config has a {key} section: this Ludwig option is not supported by hvd_trainer, which has no "
        f"{what}. Remove the {key} section."
    )


def _drop_noop_keys(data: Mapping[str, Any], path: str, section: str) -> Dict[str, Any]:
    """Copy of `data` without the harmless Ludwig-only keys of `section`; refuse the others."""
    table = _NOOP_KEYS.get(section, {})
    out = {}
    for key, value in data.items():
        if key not in table:
            out[key] = value
            continue
        accepted = table[key]
        if accepted is ANY or any(_same(value, a) for a in accepted):
            continue
        shown = " or ".join("null" if a is None else repr(a) for a in accepted)
        raise _not_supported(f"{path}.{key}", value, f"Only {shown} (which changes nothing) is accepted for it.")
    return out


def _same(value: Any, accepted: Any) -> bool:
    """Equality that keeps true/false apart from 1/0 (YAML `false` is not `robust_lambda: 0`)."""
    if isinstance(value, bool) or isinstance(accepted, bool):
        return value is accepted
    return value == accepted


def _check_ludwig_value(section_key: str, key: str, value: Any, supported) -> None:
    if value in _LUDWIG_ONLY_VALUES.get(section_key, ()):
        raise _not_supported(key, value, f"Supported values: {', '.join(map(str, supported))}.")


def _mapping(value: Any, path: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{path} must be a mapping of keys to values, but it is {type(value).__name__} ({value!r}). "
            f"Write it as '{path}: {{key: value, ...}}' or leave it out for the defaults."
        )
    return dict(value)


# ---- per-feature preprocessing ---------------------------------------------------------------
@dataclass
class NumberPreprocessing:
    missing_value_strategy: str = _f("fill_with_const", "What to do with a missing value.",
                                     choices=MISSING_VALUE_STRATEGIES["number"])
    fill_value: float = _f(0.0, "The value used by fill_with_const.")
    normalization: Optional[str] = _f("zscore", "zscore, minmax, or null for none.", choices=("zscore", "minmax"))


@dataclass
class NumberOutputPreprocessing(NumberPreprocessing):
    missing_value_strategy: str = _f("drop_row", "What to do with a missing target.",
                                     choices=MISSING_VALUE_STRATEGIES["number"])
    normalization: Optional[str] = _f(None, "zscore, minmax, or null for none.", choices=("zscore", "minmax"))


@dataclass
class CategoryPreprocessing:
    missing_value_strategy: str = _f("fill_with_const", "What to do with a missing value.",
                                     choices=MISSING_VALUE_STRATEGIES["category"])
    fill_value: Union[str, int, float] = _f(UNK, "The category used by fill_with_const.")
    most_common: Optional[int] = _f(10000, "Keep this many most frequent values; the rest map to <UNK>.", min=1)
    lowercase: bool = _f(False, "Lowercase values before building the vocabulary.")

    def __post_init__(self):
        # A category read from a file is a string, so a numeric fill value must become one too.
        self.fill_value = str(self.fill_value)


@dataclass
class CategoryOutputPreprocessing(CategoryPreprocessing):
    missing_value_strategy: str = _f("drop_row", "What to do with a missing target.",
                                     choices=MISSING_VALUE_STRATEGIES["category"])


@dataclass
class BinaryPreprocessing:
    missing_value_strategy: str = _f("fill_with_false", "What to do with a missing value.",
                                     choices=MISSING_VALUE_STRATEGIES["binary"])
    fill_value: Union[None, bool, float, str] = _f(None, "The value used by fill_with_const (true/false, 1/0, yes/no).")
    fallback_true_label: Optional[str] = _f(None, "The value read as true when the column is not yes/no, true/false or 1/0.")

    def __post_init__(self):
        if self.missing_value_strategy == "fill_with_const" and self.fill_value is None:
            raise ValueError(
                "missing_value_strategy is fill_with_const but fill_value is not set; set fill_value "
                "(e.g. false) or use fill_with_false."
            )


@dataclass
class BinaryOutputPreprocessing(BinaryPreprocessing):
    missing_value_strategy: str = _f("drop_row", "What to do with a missing target.",
                                     choices=MISSING_VALUE_STRATEGIES["binary"])


# ---- encoders, losses, decoders ----------------------------------------------------------------
@dataclass
class PassthroughEncoderConfig:
    type: str = _f("passthrough", "The (normalized) value itself is the encoding.", choices=("passthrough",))


@dataclass
class CategoryEncoderConfig:
    type: str = _f("dense", "dense (trainable embedding), sparse or onehot (one-hot vector).",
                   choices=("dense", "sparse", "onehot"))
    embedding_size: int = _f(50, "Width of the dense embedding.", min=1)
    embeddings_trainable: bool = _f(True, "Train the dense embedding (false: keep its random init).")
    dropout: float = _f(0.0, "Dropout on the encoding.", min=0, max=0.999)


@dataclass
class LossConfig:
    type: Optional[str] = _f(None, "The loss (only the feature type's default is implemented).")
    weight: float = _f(1.0, "Weight of this output's loss in the combined loss.", min=0)


@dataclass
class DecoderConfig:
    type: Optional[str] = _f(None, "classifier (category) or regressor (number, binary).",
                             choices=("classifier", "regressor"))


# ---- features ----------------------------------------------------------------------------------
@dataclass
class FeatureConfig:
    name: str = _f("", "The feature's name; also the column read, unless column is set.")
    type: str = _f("", "number, category or binary.")
    column: Optional[str] = _f(None, "The column of the dataset (default: the name).")

    @property
    def column_name(self) -> str:
        return self.column if self.column is not None else self.name


@dataclass
class NumberInputConfig(FeatureConfig):
    preprocessing: NumberPreprocessing = field(default_factory=NumberPreprocessing)
    encoder: PassthroughEncoderConfig = field(default_factory=PassthroughEncoderConfig)


@dataclass
class CategoryInputConfig(FeatureConfig):
    preprocessing: CategoryPreprocessing = field(default_factory=CategoryPreprocessing)
    encoder: CategoryEncoderConfig = field(default_factory=CategoryEncoderConfig)


@dataclass
class BinaryInputConfig(FeatureConfig):
    preprocessing: BinaryPreprocessing = field(default_factory=BinaryPreprocessing)
    encoder: PassthroughEncoderConfig = field(default_factory=PassthroughEncoderConfig)


@dataclass
class NumberOutputConfig(FeatureConfig):
    preprocessing: NumberOutputPreprocessing = field(default_factory=NumberOutputPreprocessing)
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


@dataclass
class CategoryOutputConfig(FeatureConfig):
    preprocessing: CategoryOutputPreprocessing = field(default_factory=CategoryOutputPreprocessing)
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    top_k: int = _f(3, "k of the hits_at_k metric.", min=1)


@dataclass
class BinaryOutputConfig(FeatureConfig):
    preprocessing: BinaryOutputPreprocessing = field(default_factory=BinaryOutputPreprocessing)
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    threshold: float = _f(0.5, "Probability above which the prediction is true.", gt=0, max=0.999999)


INPUT_CLASSES = {"number": NumberInputConfig, "category": CategoryInputConfig, "binary": BinaryInputConfig}
OUTPUT_CLASSES = {"number": NumberOutputConfig, "category": CategoryOutputConfig, "binary": BinaryOutputConfig}
InputFeatureConfig = Union[NumberInputConfig, CategoryInputConfig, BinaryInputConfig]
OutputFeatureConfig = Union[NumberOutputConfig, CategoryOutputConfig, BinaryOutputConfig]


# ---- combiner and global preprocessing -------------------------------------------------------------
@dataclass
class FCLayerConfig:
    """One layer of combiner.fc_layers; unset keys take the combiner's values."""

    output_size: Optional[int] = _f(None, "Width of the layer.", min=1)
    activation: Optional[str] = _f(None, "Activation.", choices=ACTIVATIONS)
    dropout: Optional[float] = _f(None, "Dropout after the activation.", min=0, max=0.999)
    norm: Optional[str] = _f(None, "batch or layer normalization (null: none).", choices=NORMS)
    use_bias: Optional[bool] = _f(None, "Give the layer a bias.")


@dataclass
class CombinerConfig:
    type: str = _f("concat", "Only concat is implemented.", choices=("concat",))
    num_fc_layers: int = _f(0, "Fully connected layers after the concatenation (fc_layers overrides).", min=0)
    output_size: int = _f(256, "Width of each fully connected layer.", min=1)
    dropout: float = _f(0.0, "Dropout after each layer's activation.", min=0, max=0.999)
    activation: str = _f("relu", "Activation of each layer.", choices=ACTIVATIONS)
    norm: Optional[str] = _f(None, "batch or layer normalization (null: none).", choices=NORMS)
    use_bias: bool = _f(True, "Give the layers a bias.")
    flatten_inputs: bool = _f(False, "Accepted for Ludwig compatibility; encodings here are already flat.")
    fc_layers: Optional[List[FCLayerConfig]] = _f(None, "Per-layer settings; overrides num_fc_layers.")

    def layer_specs(self) -> List[FCLayerConfig]:
        """The fully connected layers, with every setting resolved."""
        layers = self.fc_layers if self.fc_layers is not None else [FCLayerConfig() for _ in range(self.num_fc_layers)]
        return [
            FCLayerConfig(
                output_size=l.output_size if l.output_size is not None else self.output_size,
                activation=l.activation if l.activation is not None else self.activation,
                dropout=l.dropout if l.dropout is not None else self.dropout,
                norm=l.norm if l.norm is not None else self.norm,
                use_bias=l.use_bias if l.use_bias is not None else self.use_bias,
            )
            for l in layers
        ]


@dataclass
class SplitConfig:
    type: str = _f("random", "random (by probabilities) or fixed (by a column of 0/1/2).", choices=("random", "fixed"))
    probabilities: Tuple[float, float, float] = _f((0.7, 0.1, 0.2), "Training, validation and test shares (random).")
    column: Optional[str] = _f(None, "The split column (fixed; default 'split').")

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
                f"split.column ({self.column!r}) is only used by the fixed split; remove it or set split.type: fixed."
            )

    @property
    def column_name(self) -> str:
        return self.column or "split"


@dataclass
class PreprocessingConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    sample_ratio: float = _f(1.0, "Share of the rows used (drawn per row from the seed).", gt=0, max=1)


# ---- the model config ------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """The model keys of a config file, validated; build it with ModelConfig.from_dict."""

    input_features: List[InputFeatureConfig]
    output_features: List[OutputFeatureConfig]
    combiner: CombinerConfig = field(default_factory=CombinerConfig)
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
        inputs = _features(config, "input_features", INPUT_CLASSES)
        outputs = _features(config, "output_features", OUTPUT_CLASSES)
        _check_names(inputs, outputs)
        combiner = _combiner(config.get("combiner"))
        preprocessing = _preprocessing(config.get("preprocessing"))
        return cls(inputs, outputs, combiner, preprocessing)

    def to_dict(self) -> Dict[str, Any]:
        return to_dict(self)

    @property
    def features(self) -> List[Union[InputFeatureConfig, OutputFeatureConfig]]:
        return list(self.input_features) + list(self.output_features)

    def feature(self, name: str):
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def _check_top_level(config: Mapping[str, Any]) -> None:
    allowed = MODEL_KEYS + OTHER_TOP_LEVEL_KEYS
    for key, value in config.items():
        if key in ("defaults", "hyperopt"):
            if value in (None, {}):
                continue
            what = ("per-type defaults (set preprocessing and encoder on each feature instead)" if key == "defaults"
                    else "hyperparameter search (run one training per setting instead)")
            raise _unsupported_section(key, what)
        if key not in allowed:
            raise ConfigError(
                f"Unknown top-level key {key!r} in the config.{did_you_mean(key, allowed)} The allowed top-level "
                f"keys are: {', '.join(allowed)}."
            )
    model_type = config.get("model_type", "ecd")
    if model_type != "ecd":
        raise _not_supported("model_type", model_type, "Only ecd (the default) is implemented.")
    if config.get("backend") not in (None, {}):
        logger.warning("The config's backend section is ignored: hvd_trainer always runs on Horovod or locally, "
                       "as set by the distributed section.")


def _features(config: Mapping[str, Any], key: str, classes: Mapping[str, type]) -> list:
    raw = config.get(key)
    kind = "input" if key == "input_features" else "output"
    if not raw:
        raise ConfigError(
            f"The config has no {key}; a model needs at least one {kind} feature, e.g. "
            f"'{key}: [{{name: x, type: {'number' if kind == 'input' else 'category'}}}]'."
        )
    if not isinstance(raw, list):
        raise ConfigError(f"{key} must be a list of features ({{name: ..., type: ...}}), but it is {type(raw).__name__}.")
    return [_feature(item, f"{key}[{i}]", kind, classes) for i, item in enumerate(raw)]


def _feature(item: Any, path: str, kind: str, classes: Mapping[str, type]):
    data = _mapping(item, path)
    name, ftype = data.get("name"), data.get("type")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path} has no name; every feature needs 'name: <column name>' (a non-empty string).")
    if name.startswith(RESERVED_PREFIX):
        raise ConfigError(f"{path}.name is {name!r}; names starting with '__' are reserved for hvd_trainer. Rename the feature.")
    where = f"{kind.capitalize()} feature {name!r} ({path})"
    if ftype is None:
        raise ConfigError(f"{where} has no type; add 'type:' with one of: {', '.join(FEATURE_TYPES)}.")
    if ftype in LUDWIG_OTHER_FEATURE_TYPES:
        raise _not_supported(f"{path}.type", ftype, f"Supported feature types: {', '.join(FEATURE_TYPES)}.")
    if ftype not in classes:
        raise ConfigError(
            f"{path}.type is {ftype!r}, which is not a feature type.{did_you_mean(ftype, FEATURE_TYPES)} "
            f"Use one of: {', '.join(FEATURE_TYPES)}."
        )
    data = _drop_noop_keys(data, path, f"{kind}_feature")
    if kind == "input":
        data = _fold_flat_encoder(data, path, ftype)
    for section in ("preprocessing", "encoder", "loss", "decoder"):
        if section in data:
            sub = _drop_noop_keys(_mapping(data[section], f"{path}.{section}"), f"{path}.{section}",
                                  f"{ftype}.{section}" if section in ("preprocessing", "encoder") else section)
            _check_section_values(sub, f"{path}.{section}", ftype, section, kind)
            data[section] = sub
    try:
        return from_dict(classes[ftype], data, path)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _fold_flat_encoder(data: Dict[str, Any], path: str, ftype: str) -> Dict[str, Any]:
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


def _check_section_values(sub: Dict[str, Any], path: str, ftype: str, section: str, kind: str) -> None:
    if section == "preprocessing":
        strategy = sub.get("missing_value_strategy")
        _check_ludwig_value("preprocessing.missing_value_strategy", f"{path}.missing_value_strategy", strategy,
                            MISSING_VALUE_STRATEGIES[ftype])
        if ftype == "number":
            _check_ludwig_value("number.preprocessing.normalization", f"{path}.normalization", sub.get("normalization"),
                                ("zscore", "minmax", "null"))
    elif section == "encoder":
        supported = ("dense", "sparse", "onehot") if ftype == "category" else ("passthrough",)
        _check_ludwig_value(f"{ftype}.encoder.type", f"{path}.type", sub.get("type"), supported)
    elif section == "loss":
        ltype = sub.get("type")
        if ltype is not None and ltype != DEFAULT_LOSS[ftype]:
            raise _not_supported(f"{path}.type", ltype, f"A {ftype} output uses {DEFAULT_LOSS[ftype]}.")
    elif section == "decoder":
        dtype = sub.get("type")
        if dtype is not None and dtype != DEFAULT_DECODER[ftype]:
            raise _not_supported(f"{path}.type", dtype,
                                 f"A {ftype} output uses the {DEFAULT_DECODER[ftype]} decoder (one linear layer).")


def _check_names(inputs: list, outputs: list) -> None:
    seen: Dict[str, str] = {}
    for kind, features in (("input_features", inputs), ("output_features", outputs)):
        for f in features:
            if f.name in seen:
                raise ConfigError(
                    f"The feature name {f.name!r} appears twice (in {seen[f.name]} and {kind}); names must be "
                    "unique. Rename one, and use 'column:' if both read the same column."
                )
            seen[f.name] = kind


def _combiner(raw: Any) -> CombinerConfig:
    data = _drop_noop_keys(_mapping(raw, "combiner"), "combiner", "combiner")
    _check_ludwig_value("combiner.type", "combiner.type", data.get("type"), ("concat",))
    if isinstance(data.get("fc_layers"), list):
        data["fc_layers"] = [
            _drop_noop_keys(_mapping(l, f"combiner.fc_layers[{i}]"), f"combiner.fc_layers[{i}]", "fc_layer")
            for i, l in enumerate(data["fc_layers"])
        ]
    return from_dict(CombinerConfig, data, "combiner")


def _preprocessing(raw: Any) -> PreprocessingConfig:
    data = _drop_noop_keys(_mapping(raw, "preprocessing"), "preprocessing", "preprocessing")
    for key in data:
        if key in FEATURE_TYPES or key in LUDWIG_OTHER_FEATURE_TYPES:
            raise _unsupported_section(f"preprocessing.{key}",
                                       "per-type preprocessing defaults (set preprocessing on each feature instead)")
    if "split_probabilities" in data:  # Ludwig before 0.6 wrote the random split's shares here
        if "split" in data:
            raise ConfigError(
                "preprocessing has both split_probabilities (older Ludwig) and split; keep only "
                "split: {type: random, probabilities: [...]}."
            )
        data["split"] = {"type": "random", "probabilities": data.pop("split_probabilities")}
    if "split" in data:
        split = _mapping(data["split"], "preprocessing.split")
        _check_ludwig_value("split.type", "preprocessing.split.type", split.get("type"), ("random", "fixed"))
        data["split"] = split
    return from_dict(PreprocessingConfig, data, "preprocessing")


def module_key(index: int, name: str) -> str:
    """A key for nn.ModuleDict: feature names may hold '.' or clash with ModuleDict's methods."""
    return f"{index}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
