"""The vector feature: a fixed number of floats per row, written as Ludwig reads them (one string
of space-separated numbers, "0.1 2 -3.5") or stored as an Arrow list column. As an input, the
`dense` encoder (fully connected layers, one of 256 by default) or `passthrough`; as an output, a
`projector` (one linear layer to vector_size) with mean squared error, reporting Ludwig's vector
metrics (mean squared error, mean absolute error, r2).

Metadata (Ludwig's names): vector_size and the computed fill value. vector_size is the config's,
or the length every training row shares (checked over all ranks); a row of another length is
refused, naming the row. A missing vector takes fill_value (a string of vector_size numbers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from hvd_trainer.errors import DataError
from hvd_trainer.features.arrays import describe_feature, missing_mask, no_values_error, ranked
from hvd_trainer.features.base import ANY, FeatureType
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.config import DecoderConfig, FeatureConfig, LossConfig, OutputFeatureConfig, config_field
from hvd_trainer.features.layers import ACTIVATIONS, NORMS, FCLayerSpec, FCStack
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.metrics import MeanAbsoluteError, MeanLoss, MeanSquaredError, R2Score

MISSING_VALUE_STRATEGIES = ("fill_with_const", "fill_with_mode", "drop_row")


# ---- config ----------------------------------------------------------------------------------
@dataclass
class VectorPreprocessing:
    vector_size: Optional[int] = config_field(None, "Numbers per row (null: the length the data's rows share).",
                                              min=1)
    missing_value_strategy: str = config_field("fill_with_const", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: str = config_field("", "The vector used by fill_with_const: vector_size space-separated numbers.")


@dataclass
class VectorOutputPreprocessing(VectorPreprocessing):
    missing_value_strategy: str = config_field("drop_row", "What to do with a missing target.",
                                               choices=MISSING_VALUE_STRATEGIES)


@dataclass
class VectorEncoderConfig:
    type: str = config_field("dense", "dense (fully connected layers) or passthrough (the numbers themselves).",
                             choices=("dense", "passthrough"))
    fc_layers: Optional[List[FCLayerSpec]] = config_field(None, "The dense encoder's layers.")
    num_layers: int = config_field(1, "Number of layers (when fc_layers is not set).", min=1)
    output_size: int = config_field(256, "Width of each layer.", min=1)
    activation: str = config_field("relu", "Activation of the layers.", choices=tuple(ACTIVATIONS))
    dropout: float = config_field(0.0, "Dropout after each layer.", min=0, max=0.999)
    norm: Optional[str] = config_field(None, "batch or layer normalization in the layers.", choices=NORMS)
    use_bias: bool = config_field(True, "Give the layers a bias.")


@dataclass
class VectorDecoderConfig(DecoderConfig):
    """Ludwig's projector: the output's optional fc layers (DecoderConfig), then one linear layer to vector_size."""

    type: Optional[str] = config_field(None, "projector: one linear layer to vector_size.", choices=("projector",))


@dataclass
class VectorInputConfig(FeatureConfig):
    preprocessing: VectorPreprocessing = field(default_factory=VectorPreprocessing)
    encoder: VectorEncoderConfig = field(default_factory=VectorEncoderConfig)


@dataclass
class VectorOutputConfig(OutputFeatureConfig):
    preprocessing: VectorOutputPreprocessing = field(default_factory=VectorOutputPreprocessing)
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: VectorDecoderConfig = field(default_factory=VectorDecoderConfig)
    vector_size: Optional[int] = config_field(None, "Accepted as Ludwig writes it; the data's size is used.", min=1)
    softmax: bool = config_field(False, "Ludwig's softmax on the projection (only false is supported).",
                                 choices=(False,))


# ---- casting ---------------------------------------------------------------------------------
def cast_vector(array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    """An object array of float tuples (None where missing); text that is not numbers is refused."""
    t = array.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        raw = array.to_pylist()
        out = np.empty(len(raw), dtype=object)
        for i, v in enumerate(raw):
            out[i] = None if v is None else tuple(float(x) for x in v)
        return out
    if pa.types.is_integer(t) or pa.types.is_floating(t):  # a one-number vector stored as a number column
        raw = pc.cast(array, pa.float64()).to_pylist()
        out = np.empty(len(raw), dtype=object)
        for i, v in enumerate(raw):
            out[i] = None if v is None or not np.isfinite(v) else (float(v),)
        return out
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise DataError(
            f"The {describe_feature(feature)} of {path} has the type {t}, which is not a vector. Store each row as "
            "a string of space-separated numbers (\"0.5 1 -2\"), as Ludwig reads vectors, or as a list column."
        )
    raw = pc.utf8_trim_whitespace(array).to_pylist()
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw):
        out[i] = None if v is None or v == "" else _parse(v, feature, int(row_ids[i]), path)
    return out


def _parse(text: str, feature: FeatureConfig, row: int, path: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split())
    except ValueError:
        raise DataError(
            f"The {describe_feature(feature)} of {path} holds {text!r} in row {row} (counting data rows from 0), "
            "which is not a list of space-separated numbers. Fix the value, or leave the cell empty to mark it "
            "missing."
        ) from None
    if not all(np.isfinite(values)):
        raise DataError(
            f"The {describe_feature(feature)} of {path} holds a non-finite number in row {row} ({text!r}); it "
            "cannot be learned from. Replace it with finite numbers, or leave the cell empty to mark it missing."
        )
    return values


# ---- metadata and transform ------------------------------------------------------------------
def vector_metadata(features: List[FeatureConfig], columns: Mapping[str, np.ndarray], counts,
                    reducer) -> Dict[str, Any]:
    """vector_size of every vector feature: the lengths of all ranks' rows agreed by one min and one max."""
    lengths = [[len(v) for v in columns[f.name] if v is not None] for f in features]
    lo = reducer.min([min(ls) if ls else np.inf for ls in lengths])
    hi = reducer.max([max(ls) if ls else -np.inf for ls in lengths])
    out = {}
    for i, f in enumerate(features):
        p = f.preprocessing
        if not np.isfinite(lo[i]) and p.vector_size is None:
            raise no_values_error(f, "inferring vector_size")
        size = p.vector_size if p.vector_size is not None else int(lo[i])
        if np.isfinite(lo[i]) and (lo[i] != size or hi[i] != size):
            wanted = f" ({size}, preprocessing.vector_size)" if p.vector_size else ""
            raise DataError(
                f"The {describe_feature(f)} has rows of {int(lo[i])} to {int(hi[i])} numbers in the training set, but "
                f"a vector feature has one size{wanted}. Make every row the same length, or set "
                "preprocessing.vector_size to the length they should have."
            )
        fill = _vector_fill(f, size, counts.get(f.name))
        out[f.name] = {
            "type": "vector", "column": f.column_name, "vector_size": int(size),
            "preprocessing": {"missing_value_strategy": p.missing_value_strategy,
                              "computed_fill_value": " ".join(repr(float(x)) for x in fill) if fill else ""},
        }
    return out


def _vector_fill(f: FeatureConfig, size: int, counted) -> Optional[Tuple[float, ...]]:
    p = f.preprocessing
    if p.missing_value_strategy == "fill_with_mode":
        value_counts, _ = counted
        if not value_counts:
            raise no_values_error(f, "fill_with_mode")
        return tuple(ranked(value_counts)[0])
    if p.missing_value_strategy == "fill_with_const" and p.fill_value.strip():
        fill = _parse(p.fill_value, f, -1, "the config")
        if len(fill) != size:
            raise DataError(
                f"preprocessing.fill_value of the vector feature {f.name!r} has {len(fill)} numbers, but its rows "
                f"have {size}. Write {size} space-separated numbers, or use missing_value_strategy: drop_row."
            )
        return fill
    return None


def vector_matrix(values: np.ndarray, meta: Mapping[str, Any], name: str, row_ids: np.ndarray,
                  path: str) -> np.ndarray:
    """[rows, vector_size] float32; a missing row takes the fill value, a row of another size is refused."""
    size = int(meta["vector_size"])
    fill = meta["preprocessing"]["computed_fill_value"]
    out = np.empty((len(values), size), dtype=np.float32)
    missing = missing_mask(values)
    for i, v in enumerate(values):
        if missing[i]:
            if not fill:
                raise DataError(
                    f"The vector column of feature {name!r} in {path} is missing in row {int(row_ids[i])} (counting "
                    "data rows from 0), and the feature has no fill_value. Set preprocessing.fill_value to "
                    f"{size} space-separated numbers, or use missing_value_strategy: drop_row."
                )
            v = tuple(float(x) for x in fill.split())
        if len(v) != size:
            raise DataError(
                f"The vector column of feature {name!r} in {path} has {len(v)} numbers in row {int(row_ids[i])} "
                f"(counting data rows from 0), but the feature was trained with vector_size {size}. Make every row "
                f"{size} numbers long."
            )
        out[i] = v
    return out


# ---- model -----------------------------------------------------------------------------------
class VectorInput(InputFeature):
    def __init__(self, name: str, size: int, config: VectorInputConfig):
        super().__init__(name)
        self.size = size
        self.config = config

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.size)

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.float32)

    def build_encoder(self) -> nn.Module:
        enc = self.config.encoder
        if enc.type == "passthrough":
            return FCStack(self.size, None, 0, 1)
        return FCStack(self.size, enc.fc_layers, enc.num_layers, enc.output_size, enc.activation, enc.dropout,
                       enc.norm, enc.use_bias)


class VectorOutput(OutputFeature):
    type = "vector"
    metric_types = (MeanLoss, MeanSquaredError, MeanAbsoluteError, R2Score)

    def __init__(self, name: str, size: int, loss_weight: float = 1.0):
        super().__init__(name, loss_weight)
        self.size = size

    @property
    def output_size(self) -> int:
        return self.size

    def loss(self, logits, target):
        return ((logits.float().reshape(-1, self.size) - target.float().reshape(-1, self.size)) ** 2).mean(-1)

    def predictions(self, logits):
        return {"predictions": logits.float().reshape(-1, self.size)}

    def update_metrics(self, metrics, logits, target):
        preds, target = logits.float().reshape(-1, self.size), target.float().reshape(-1, self.size)
        metrics["mean_squared_error"].update(preds, target)
        metrics["mean_absolute_error"].update(preds, target)
        metrics["r2"].update(preds, target)

    def create_sample_output(self, batch_size):
        return torch.randn(batch_size, self.size)

    def target_tensor(self, column):
        return column_tensor(column, torch.float32)


# ---- the type ----------------------------------------------------------------------------------
class VectorType(FeatureType):
    name = "vector"
    input_config = VectorInputConfig
    output_config = VectorOutputConfig
    output_class = VectorOutput
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = "mean_squared_error"
    default_decoder = "projector"
    ludwig_noop_keys = {
        "preprocessing": {"computed_fill_value": ANY},
        "encoder": {"skip": (False,), "weights_initializer": ANY, "bias_initializer": ANY, "norm_params": (None,),
                    "input_size": ANY},
    }
    ludwig_only_values = {}

    def cast(self, array, feature, row_ids, path):
        return cast_vector(array, feature, row_ids, path)

    def needs_value_counts(self, feature):
        return feature.preprocessing.missing_value_strategy == "fill_with_mode"

    def metadata(self, features, columns, counts, reducer):
        return vector_metadata(features, columns, counts, reducer)

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        return vector_matrix(values, meta, name, row_ids, path)

    def decode(self, meta, predictions):
        rows = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            out[i] = " ".join(f"{x:.6g}" for x in row)
        return out

    def input_feature(self, config, metadata):
        return VectorInput(config.name, int(metadata[config.name]["vector_size"]), config)

    def output_feature(self, config, metadata):
        return VectorOutput(config.name, int(metadata[config.name]["vector_size"]), loss_weight=config.loss.weight)


VECTOR = VectorType()
