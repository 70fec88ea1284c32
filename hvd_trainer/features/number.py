"""The number feature: a float column, filled and normalised; its own encoding as an input,
regressed (mean squared error) as an output.

Metadata (Ludwig's names): mean, std, min, max and the computed fill value, over the training
set after filling. When ranks hold shards, sums, minima and maxima are combined by allreduce,
and the squared deviations in a second allreduce once the global mean is known (two passes are
numerically stable where sum-of-squares minus square-of-sum is not).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from hvd_trainer.errors import DataError
from hvd_trainer.features.arrays import describe_feature, no_values_error
from hvd_trainer.features.base import ANY, FeatureType, ValueCounts
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.config import FeatureConfig, OutputFeatureConfig, PassthroughEncoderConfig, config_field
from hvd_trainer.features.model_parts import OutputFeature, ScalarInput
from hvd_trainer.features.reducer import Reducer
from hvd_trainer.metrics import MeanAbsoluteError, MeanLoss, MeanSquaredError, R2Score

MISSING_VALUE_STRATEGIES = ("fill_with_const", "fill_with_mean", "fill_with_mode", "drop_row")
NORMALIZATIONS = ("zscore", "minmax")


# ---- config ----------------------------------------------------------------------------------
@dataclass
class NumberPreprocessing:
    missing_value_strategy: str = config_field("fill_with_const", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: float = config_field(0.0, "The value used by fill_with_const.")
    normalization: Optional[str] = config_field("zscore", "zscore, minmax, or null for none.", choices=NORMALIZATIONS)


@dataclass
class NumberOutputPreprocessing(NumberPreprocessing):
    missing_value_strategy: str = config_field("drop_row", "What to do with a missing target.",
                                               choices=MISSING_VALUE_STRATEGIES)
    normalization: Optional[str] = config_field(None, "zscore, minmax, or null for none.", choices=NORMALIZATIONS)


@dataclass
class NumberInputConfig(FeatureConfig):
    preprocessing: NumberPreprocessing = field(default_factory=NumberPreprocessing)
    encoder: PassthroughEncoderConfig = field(default_factory=PassthroughEncoderConfig)


@dataclass
class NumberOutputConfig(OutputFeatureConfig):
    preprocessing: NumberOutputPreprocessing = field(default_factory=NumberOutputPreprocessing)


# ---- casting ---------------------------------------------------------------------------------
def cast_number(array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    """float64 values (float32 for a float32 column) with NaN where missing; an error naming the row
    for text or infinity. A float32 column stays float32: widening is exact but would double the
    memory of the whole column, and the statistics and transforms widen one column at a time."""
    t = array.type
    if pa.types.is_float32(t):
        values = array.to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        trimmed = pc.utf8_trim_whitespace(array)
        try:
            values = pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = _parse_floats_slowly(trimmed.to_pylist(), feature, row_ids, path)
    else:
        raise DataError(
            f"The {describe_feature(feature)} of {path} has the type {t}, which is not a number. Declare the "
            "feature with a type that fits the column, or store the column as numbers."
        )
    values = np.asarray(values, dtype=np.float32 if values.dtype == np.float32 else np.float64)
    bad = np.isinf(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"The {describe_feature(feature)} of {path} holds {values[i]} in row {int(row_ids[i])} (counting "
            "data rows from 0); an infinite value cannot be normalised or learned from. Replace it with a finite "
            "number, or leave the cell empty to treat it as missing."
        )
    return values


def _parse_floats_slowly(raw: List[Optional[str]], feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    """Python's float() per value: finds the first bad value (and accepts forms Arrow does not)."""
    out = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        if v is None:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            raise DataError(
                f"The {describe_feature(feature)} of {path} holds the value {v!r} in row {int(row_ids[i])} (counting "
                "data rows from 0), which is not a number. Fix the value (or leave the cell empty to mark it missing), "
                "or declare the feature as type category if the column is not numeric."
            ) from None
    return out


# ---- metadata --------------------------------------------------------------------------------
def number_metadata(numbers: List[FeatureConfig], columns: Mapping[str, np.ndarray], counts: ValueCounts,
                    reducer: Reducer) -> Dict[str, Dict[str, Any]]:
    """Metadata of all number features at once: each statistic is one collective for all of them."""
    local = [columns[f.name] for f in numbers]
    # One column's present values at a time: a list of them all would copy every number column.
    stats = [_column_stats(v) for v in local]
    sums = reducer.sum(np.concatenate([s[:3] for s in stats]))
    mins = reducer.min([s[3] for s in stats])
    maxs = reducer.max([s[4] for s in stats])
    fills, means = [], []
    for i, f in enumerate(numbers):
        count, total, missing = sums[3 * i], sums[3 * i + 1], sums[3 * i + 2]
        fill = _number_fill(f, count, total, counts.get(f.name))
        fills.append(fill)
        means.append((total + missing * fill) / (count + missing))
    # Second pass: squared deviations from the global mean, missing values counted as their fill.
    m2 = reducer.sum([_squared_deviations(v, mean, fill) for v, mean, fill in zip(local, means, fills)])
    out = {}
    for i, f in enumerate(numbers):
        count, missing = sums[3 * i], sums[3 * i + 2]
        n = count + missing
        lo = min(mins[i], fills[i]) if missing else mins[i]
        hi = max(maxs[i], fills[i]) if missing else maxs[i]
        # A constant column (sklearn's digits has all-zero pixels) has no spread: record std 0
        # exactly, rather than rounding noise, and let the transform divide by 1.
        std = 0.0 if lo == hi or n < 2 else math.sqrt(max(m2[i], 0.0) / (n - 1))
        out[f.name] = {
            "type": "number", "column": f.column_name,
            "preprocessing": {"missing_value_strategy": f.preprocessing.missing_value_strategy,
                              "computed_fill_value": float(fills[i]), "normalization": f.preprocessing.normalization},
            "mean": float(means[i]), "std": float(std), "min": float(lo), "max": float(hi),
        }
    return out


def _column_stats(values: np.ndarray) -> List[float]:
    """[present count, sum, missing count, min, max] of one cast column (min/max of none: +-inf)."""
    present = values[~np.isnan(values)].astype(np.float64, copy=False)
    return [len(present), float(np.sum(present)), len(values) - len(present),
            float(present.min()) if len(present) else math.inf, float(present.max()) if len(present) else -math.inf]


def _squared_deviations(values: np.ndarray, mean: float, fill: float) -> float:
    """Sum of squared deviations from `mean`, a missing value counted as `fill`."""
    present = values[~np.isnan(values)].astype(np.float64, copy=False)
    return float(np.sum((present - mean) ** 2)) + (len(values) - len(present)) * (fill - mean) ** 2


def _number_fill(f: FeatureConfig, count: float, total: float, counted) -> float:
    strategy = f.preprocessing.missing_value_strategy
    if strategy == "fill_with_mean":
        if count == 0:
            raise no_values_error(f, strategy)
        return total / count
    if strategy == "fill_with_mode":
        value_counts, _ = counted
        if not value_counts:
            raise no_values_error(f, strategy)
        best = max(value_counts.values())
        return float(min(v for v, c in value_counts.items() if c == best))
    return float(f.preprocessing.fill_value)


# ---- transform -------------------------------------------------------------------------------
def normalize_number(x: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """Apply the feature's normalization; a constant column becomes 0, never NaN."""
    how = meta["preprocessing"]["normalization"]
    if how == "zscore":
        return (x - meta["mean"]) / (meta["std"] if meta["std"] > 0 else 1.0)
    if how == "minmax":
        spread = meta["max"] - meta["min"]
        return (x - meta["min"]) / (spread if spread > 0 else 1.0)
    return x


def denormalize_number(x: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """Inverse of normalize_number (predictions of a normalised number output)."""
    how = meta["preprocessing"]["normalization"]
    if how == "zscore":
        return x * (meta["std"] if meta["std"] > 0 else 1.0) + meta["mean"]
    if how == "minmax":
        spread = meta["max"] - meta["min"]
        return x * (spread if spread > 0 else 1.0) + meta["min"]
    return x


# ---- model -----------------------------------------------------------------------------------
class NumberInput(ScalarInput):
    """A float32 column (already normalised by preprocessing)."""

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size)


class NumberOutput(OutputFeature):
    type = "number"
    metric_types = (MeanLoss, MeanSquaredError, MeanAbsoluteError, R2Score)

    @property
    def output_size(self) -> int:
        return 1

    def loss(self, logits, target):
        return (logits.float().reshape(-1) - target.float().reshape(-1)) ** 2

    def predictions(self, logits):
        return {"predictions": logits.float().reshape(-1)}

    def update_metrics(self, metrics, logits, target):
        preds, target = logits.float().reshape(-1), target.float().reshape(-1)
        metrics["mean_squared_error"].update(preds, target)
        metrics["mean_absolute_error"].update(preds, target)
        metrics["r2"].update(preds, target)

    def create_sample_output(self, batch_size):
        return torch.randn(batch_size)

    def target_tensor(self, column):
        return column_tensor(column, torch.float32)


# ---- the type ----------------------------------------------------------------------------------
class NumberType(FeatureType):
    name = "number"
    input_config = NumberInputConfig
    output_config = NumberOutputConfig
    output_class = NumberOutput
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = "mean_squared_error"
    default_decoder = "regressor"
    ludwig_noop_keys = {
        "preprocessing": {"computed_fill_value": ANY, "outlier_strategy": (None,), "outlier_threshold": ANY},
        "encoder": {"skip": (False,)},
    }
    ludwig_only_values = {
        "preprocessing.normalization": (("log1p", "iq"), NORMALIZATIONS + ("null",)),
        "encoder.type": (("dense",), ("passthrough",)),
    }
    metadata_checked_keys = ("normalization",)
    dense_input = True

    def cast(self, array, feature, row_ids, path):
        return cast_number(array, feature, row_ids, path)

    def needs_value_counts(self, feature):
        # Only the mode needs every value; the other statistics are sums.
        return feature.preprocessing.missing_value_strategy == "fill_with_mode"

    def metadata(self, features, columns, counts, reducer):
        return number_metadata(features, columns, counts, reducer)

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        values = values.astype(np.float64, copy=False)  # a float32 column: computed as before, in float64
        x = np.where(np.isnan(values), meta["preprocessing"]["computed_fill_value"], values)
        return normalize_number(x, meta).astype(np.float32)

    def decode(self, meta, predictions):
        return denormalize_number(np.asarray(predictions).astype(np.float64), meta)

    def input_feature(self, config, metadata):
        return NumberInput(config.name)

    def output_feature(self, config, metadata):
        return NumberOutput(config.name, loss_weight=config.loss.weight)


NUMBER = NumberType()
