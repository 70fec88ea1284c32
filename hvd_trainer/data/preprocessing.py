"""Preprocessing: raw columns -> typed values -> metadata (over the whole training set) -> model arrays.

Three steps, each a function of its inputs only:

1. `cast_column` parses one raw column (pyarrow) into typed values with missing values marked
   (number: float64 with NaN; category and binary: object arrays of str with None). Errors
   name the column, the value and its row.
2. `compute_metadata` builds training_set_metadata from the training rows. When every rank
   holds only its shard, partial statistics are combined through a `Reducer`: counts, sums,
   minima and maxima by allreduce, value counts (vocabularies, modes) by allgather_object,
   and the sum of squared deviations in a second allreduce once the global mean is known
   (two passes are numerically stable where sum-of-squares minus square-of-sum is not).
3. `transform_column` applies saved metadata to any split or new data without recomputing it:
   fill, normalise, look up vocabularies. A category never seen in training maps to <UNK>.

The metadata is plain JSON (Ludwig's names: idx2str, str2idx, str2freq, vocab_size, mean, std,
min, max, str2bool, bool2str, computed_fill_value), written atomically by rank 0.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from hvd_trainer.errors import DataError
from hvd_trainer.models.config import UNK, FeatureConfig, ModelConfig

logger = logging.getLogger(__name__)

METADATA_FILE = "training_set_metadata.json"
METADATA_FORMAT_VERSION = 1
INFO_KEY = "__hvd_trainer__"
BOOL_TRUE_STRS = frozenset({"yes", "y", "true", "t", "1", "1.0"})
BOOL_FALSE_STRS = frozenset({"no", "n", "false", "f", "0", "0.0"})


# ---- 1. casting raw columns -----------------------------------------------------------------
def cast_column(array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    """Typed values of one feature's column, with missing values as NaN (number) or None."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if feature.type == "number":
        return _cast_number(array, feature, row_ids, path)
    if feature.type == "category":
        strings = _as_strings(array, feature, path)
        if feature.preprocessing.lowercase:
            strings = pc.utf8_lower(strings)
        return strings.to_numpy(zero_copy_only=False)
    return _cast_binary(array, feature, path)


def _describe_feature(feature: FeatureConfig) -> str:
    column = feature.column_name
    return f"column {column!r} ({feature.type} feature {feature.name!r})" if column != feature.name else \
        f"column {column!r} ({feature.type} feature)"


def _cast_number(array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    t = array.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        trimmed = pc.utf8_trim_whitespace(array)
        try:
            values = pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = _parse_floats_slowly(trimmed.to_pylist(), feature, row_ids, path)
    else:
        raise DataError(
            f"The {_describe_feature(feature)} of {path} has the type {t}, which is not a number. Declare the "
            "feature with a type that fits the column, or store the column as numbers."
        )
    values = np.asarray(values, dtype=np.float64)
    bad = np.isinf(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"The {_describe_feature(feature)} of {path} holds {values[i]} in row {int(row_ids[i])} (counting "
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
                f"The {_describe_feature(feature)} of {path} holds the value {v!r} in row {int(row_ids[i])} (counting "
                "data rows from 0), which is not a number. Fix the value (or leave the cell empty to mark it missing), "
                "or declare the feature as type category if the column is not numeric."
            ) from None
    return out


def _as_strings(array: pa.Array, feature: FeatureConfig, path: str) -> pa.Array:
    t = array.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        try:
            array = pc.cast(array, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(
                f"The {_describe_feature(feature)} of {path} has the type {t}, which cannot be read as categories. "
                "Store the column as strings or numbers."
            ) from None
    return pc.utf8_trim_whitespace(array)


def _cast_binary(array: pa.Array, feature: FeatureConfig, path: str) -> np.ndarray:
    t = array.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        floats = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        out = np.empty(len(floats), dtype=object)
        for i, v in enumerate(floats):
            out[i] = None if np.isnan(v) else ("1" if v == 1 else "0" if v == 0 else repr(float(v)))
        return out
    return _as_strings(array, feature, path).to_numpy(zero_copy_only=False)


def missing_mask(values: np.ndarray) -> np.ndarray:
    """True where a cast column holds a missing value."""
    if values.dtype == object:
        return np.equal(values, None)
    return np.isnan(values)


def drop_row_mask(columns: Mapping[str, np.ndarray], features: Sequence[FeatureConfig]) -> np.ndarray:
    """Rows to keep: those with a value in every feature whose strategy is drop_row."""
    n = len(next(iter(columns.values()))) if columns else 0
    keep = np.ones(n, dtype=bool)
    for f in features:
        if f.preprocessing.missing_value_strategy == "drop_row" and f.name in columns:
            keep &= ~missing_mask(columns[f.name])
    return keep


# ---- 2. metadata ------------------------------------------------------------------------------
class Reducer:
    """Combines per-rank partial statistics; the identity when every rank holds all rows."""

    def __init__(self, distributed=None, sharded: bool = False):
        self._dist = distributed if (sharded and distributed is not None and distributed.size() > 1) else None

    def _reduce(self, values: Sequence[float], op: str) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if self._dist is None or values.size == 0:
            return values
        return self._dist.allreduce(torch.from_numpy(values.copy()), op=op).numpy().astype(np.float64)

    def sum(self, values: Sequence[float]) -> np.ndarray:
        return self._reduce(values, "sum")

    def min(self, values: Sequence[float]) -> np.ndarray:
        return self._reduce(values, "min")

    def max(self, values: Sequence[float]) -> np.ndarray:
        return self._reduce(values, "max")

    def gather(self, obj: Any, name: str) -> List[Any]:
        return [obj] if self._dist is None else self._dist.allgather_object(obj, name=name)


def compute_metadata(model_config: ModelConfig, columns: Mapping[str, np.ndarray], reducer: Reducer) -> Dict[str, Any]:
    """training_set_metadata from the training rows in `columns` (this rank's, if sharded).

    Every rank must call this with the same config: the collectives run in a fixed order.
    """
    features = model_config.features
    n_rows = int(reducer.sum([len(next(iter(columns.values()))) if columns else 0])[0])
    if n_rows == 0:
        raise DataError(
            "The training set has no rows left after splitting and dropping rows with missing values "
            "(missing_value_strategy: drop_row). Check the file, the split settings and the missing values."
        )
    # Value counts of category and binary features (and of numbers filled with their mode).
    counted = [f for f in features if f.type != "number" or f.preprocessing.missing_value_strategy == "fill_with_mode"]
    local_counts = {f.name: _value_counts(columns[f.name]) for f in counted}
    merged = _merge_counts(reducer.gather(local_counts, name="data.metadata.value_counts"), [f.name for f in counted])

    metadata: Dict[str, Any] = {INFO_KEY: {"format_version": METADATA_FORMAT_VERSION, "training_rows": n_rows}}
    numbers = [f for f in features if f.type == "number"]
    metadata.update(_number_metadata(numbers, columns, merged, reducer))
    for f in features:
        if f.type == "category":
            metadata[f.name] = _category_metadata(f, *merged[f.name])
        elif f.type == "binary":
            metadata[f.name] = _binary_metadata(f, *merged[f.name])
    return {k: metadata[k] for k in [INFO_KEY] + [f.name for f in features]}


def _value_counts(values: np.ndarray):
    missing = missing_mask(values)
    present = values[~missing]
    if values.dtype != object:
        uniq, counts = np.unique(present, return_counts=True)
        return dict(zip(uniq.tolist(), counts.tolist())), int(missing.sum())
    return dict(Counter(present.tolist())), int(missing.sum())


def _merge_counts(per_rank: List[Dict[str, Any]], names: List[str]):
    merged = {}
    for name in names:
        total: Counter = Counter()
        missing = 0
        for rank_counts in per_rank:
            counts, m = rank_counts[name]
            total.update(counts)
            missing += m
        merged[name] = (total, missing)
    return merged


def _ranked(counts: Mapping[Any, int]) -> List[Any]:
    """Values by decreasing count; ties by value, so every rank and run agrees on the order."""
    return sorted(counts, key=lambda v: (-counts[v], str(v)))


def _number_metadata(numbers: List[FeatureConfig], columns, merged, reducer: Reducer) -> Dict[str, Any]:
    if not numbers:
        return {}
    local = [columns[f.name] for f in numbers]
    present = [v[~np.isnan(v)] for v in local]
    sums = reducer.sum(np.concatenate([[len(p), float(np.sum(p)), len(v) - len(p)] for p, v in zip(present, local)]))
    mins = reducer.min([float(p.min()) if len(p) else math.inf for p in present])
    maxs = reducer.max([float(p.max()) if len(p) else -math.inf for p in present])
    fills, means = [], []
    for i, f in enumerate(numbers):
        count, total, missing = sums[3 * i], sums[3 * i + 1], sums[3 * i + 2]
        fill = _number_fill(f, count, total, merged.get(f.name))
        fills.append(fill)
        means.append((total + missing * fill) / (count + missing))
    # Second pass: squared deviations from the global mean, missing values counted as their fill.
    m2 = reducer.sum([
        float(np.sum((p - mean) ** 2)) + (len(v) - len(p)) * (fill - mean) ** 2
        for p, v, mean, fill in zip(present, local, means, fills)
    ])
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


def _no_values(f: FeatureConfig, strategy: str) -> DataError:
    return DataError(
        f"The {_describe_feature(f)} has no values at all in the training set, so {strategy} has nothing to "
        "compute its fill value from. Use missing_value_strategy: fill_with_const with a fill_value, or remove the "
        "feature."
    )


def _number_fill(f: FeatureConfig, count: float, total: float, counted) -> float:
    strategy = f.preprocessing.missing_value_strategy
    if strategy == "fill_with_mean":
        if count == 0:
            raise _no_values(f, strategy)
        return total / count
    if strategy == "fill_with_mode":
        counts, _ = counted
        if not counts:
            raise _no_values(f, strategy)
        best = max(counts.values())
        return float(min(v for v, c in counts.items() if c == best))
    return float(f.preprocessing.fill_value)


def _category_metadata(f: FeatureConfig, counts: Counter, missing: int) -> Dict[str, Any]:
    p = f.preprocessing
    if p.missing_value_strategy == "fill_with_mode":
        if not counts:
            raise _no_values(f, "fill_with_mode")
        fill = _ranked(counts)[0]
    else:
        fill = p.fill_value.lower() if p.lowercase else p.fill_value
    counts = Counter(counts)
    if missing and p.missing_value_strategy != "drop_row":
        counts[fill] += missing
    ranked = [v for v in _ranked(counts) if v != UNK]
    kept = ranked[: p.most_common] if p.most_common else ranked
    idx2str = [UNK] + kept
    str2freq = {v: int(counts.get(v, 0)) for v in idx2str}
    str2freq[UNK] = int(sum(counts.values()) - sum(str2freq[v] for v in kept))
    return {
        "type": "category", "column": f.column_name,
        "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": fill,
                          "lowercase": p.lowercase, "most_common": p.most_common},
        "idx2str": idx2str, "str2idx": {v: i for i, v in enumerate(idx2str)}, "str2freq": str2freq,
        "vocab_size": len(idx2str),
    }


def _conventional_bool(value: str) -> Optional[bool]:
    low = value.lower()
    return True if low in BOOL_TRUE_STRS else False if low in BOOL_FALSE_STRS else None


def _binary_metadata(f: FeatureConfig, counts: Counter, missing: int) -> Dict[str, Any]:
    p = f.preprocessing
    fallback = p.fallback_true_label
    unconventional = sorted(v for v in counts if _conventional_bool(v) is None)
    if unconventional and fallback is None:
        if len(counts) > 2:
            shown = ", ".join(repr(v) for v in _ranked(counts)[:6])
            raise DataError(
                f"The {_describe_feature(f)} holds {len(counts)} different values ({shown}), but a binary "
                "column needs two: yes/no, true/false, 1/0, or two labels with preprocessing.fallback_true_label "
                "naming the one that means true. Fix the values, set fallback_true_label, or use type category."
            )
        fallback = unconventional[-1]
        logger.info("Binary feature %r: %r is read as true (set preprocessing.fallback_true_label to choose).",
                    f.name, fallback)
    str2bool = {v: _to_bool(v, fallback) for v in counts}
    fill = _binary_fill(f, counts, str2bool, fallback)
    by_side: Dict[bool, List[str]] = {False: [], True: []}
    for v in _ranked(counts):
        by_side[str2bool[v]].append(v)
    bool2str = [by_side[False][0] if by_side[False] else "false", by_side[True][0] if by_side[True] else "true"]
    return {
        "type": "binary", "column": f.column_name,
        "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": fill,
                          "fallback_true_label": fallback},
        "str2bool": str2bool, "bool2str": bool2str, "fallback_true_label": fallback,
    }


def _to_bool(value: str, fallback: Optional[str]) -> Optional[bool]:
    conventional = _conventional_bool(value)
    if conventional is not None:
        return conventional
    return None if fallback is None else value == fallback


def _binary_fill(f: FeatureConfig, counts: Counter, str2bool: Mapping[str, bool], fallback: Optional[str]) -> bool:
    strategy = f.preprocessing.missing_value_strategy
    if strategy in ("fill_with_false", "drop_row"):
        return False
    if strategy == "fill_with_true":
        return True
    if strategy == "fill_with_mode":
        trues = sum(c for v, c in counts.items() if str2bool[v])
        return trues > sum(counts.values()) - trues
    value = f.preprocessing.fill_value
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return value == 1.0
    mapped = _to_bool(str(value), fallback)
    if mapped is None:
        raise DataError(
            f"The binary feature {f.name!r} has fill_value {value!r}, which is neither true nor false. Use true, "
            "false, 1, 0, yes or no."
        )
    return mapped


# ---- 3. transforms ------------------------------------------------------------------------------
def transform_column(values: np.ndarray, meta: Mapping[str, Any], name: str, row_ids: np.ndarray, path: str,
                     unknown_counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Model-ready array of one cast column, using saved metadata only."""
    ftype = meta["type"]
    fill = meta["preprocessing"]["computed_fill_value"]
    if ftype == "number":
        x = np.where(np.isnan(values), fill, values)
        return normalize_number(x, meta).astype(np.float32)
    if ftype == "category":
        missing = missing_mask(values)
        idx = _lookup(values, meta["idx2str"])
        unseen = idx < 0
        idx[missing] = meta["str2idx"].get(fill, 0)
        idx[unseen & ~missing] = 0  # never seen in training: <UNK>
        if unknown_counts is not None and (unseen & ~missing).any():
            unknown_counts[name] = unknown_counts.get(name, 0) + int((unseen & ~missing).sum())
        return idx
    return _transform_binary(values, meta, name, row_ids, path)


def _lookup(values: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Position of each value in keys (-1 where absent or missing), in Arrow's hash lookup."""
    found = pc.index_in(pa.array(values, type=pa.string()), value_set=pa.array(list(keys), type=pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _transform_binary(values: np.ndarray, meta, name: str, row_ids: np.ndarray, path: str) -> np.ndarray:
    str2bool, fallback = meta["str2bool"], meta["fallback_true_label"]
    keys = list(str2bool)
    table = np.array([1.0 if str2bool[k] else 0.0 for k in keys] + [np.nan], dtype=np.float64)
    out = table[_lookup(values, keys)]  # -1 picks the trailing NaN
    out[missing_mask(values)] = 1.0 if meta["preprocessing"]["computed_fill_value"] else 0.0
    for i in np.flatnonzero(np.isnan(out)):  # values training never saw
        b = _to_bool(values[i], fallback)
        if b is None:
            raise DataError(
                f"The binary feature {name!r} holds {values[i]!r} in row {int(row_ids[i])} of {path} (counting data "
                f"rows from 0), which is neither true nor false, and training saw only {sorted(str2bool)}. Fix the "
                "value or leave the cell empty to mark it missing."
            )
        out[i] = 1.0 if b else 0.0
    return out.astype(np.float32)


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


def decode_predictions(meta: Mapping[str, Any], predictions: np.ndarray) -> np.ndarray:
    """Predictions in the data's own terms: category labels, binary labels, numbers unnormalised."""
    predictions = np.asarray(predictions)
    if meta["type"] == "category":
        idx2str = meta["idx2str"]
        return np.array([idx2str[int(i)] for i in predictions], dtype=object)
    if meta["type"] == "binary":
        bool2str = meta["bool2str"]
        return np.array([bool2str[1] if p else bool2str[0] for p in predictions], dtype=object)
    return denormalize_number(predictions.astype(np.float64), meta)


# ---- save / load ---------------------------------------------------------------------------------
def metadata_path(path: str) -> str:
    """training_set_metadata.json inside `path` when it is a directory, else `path` itself."""
    return os.path.join(path, METADATA_FILE) if os.path.isdir(path) or not path.endswith(".json") else path


def save_metadata(metadata: Mapping[str, Any], path: str, distributed=None) -> str:
    """Write the metadata as JSON (only the coordinator writes; atomically). Returns the file path."""
    from hvd_trainer.checkpoint import atomic_write_text

    target = metadata_path(path)
    if distributed is None or distributed.is_coordinator():
        atomic_write_text(target, json.dumps(metadata, indent=2, allow_nan=False) + "\n")
    return target


def load_metadata(path: str) -> Dict[str, Any]:
    """Metadata saved by save_metadata (a file, or the model directory holding it)."""
    target = metadata_path(path)
    if not os.path.exists(target):
        raise DataError(
            f"There is no training set metadata at {target}. It is written by training next to the model weights; "
            "pass the model directory of a training run (results/<experiment>/model)."
        )
    try:
        with open(target) as fh:
            metadata = json.load(fh)
    except (OSError, ValueError) as e:
        raise DataError(
            f"The training set metadata {target} could not be read ({e}); it is damaged. Copy it again from the "
            "training run, or retrain to write a new one."
        ) from None
    info = metadata.get(INFO_KEY) if isinstance(metadata, dict) else None
    if not isinstance(info, dict) or info.get("format_version") != METADATA_FORMAT_VERSION:
        raise DataError(
            f"{target} is not training set metadata written by this version of hvd_trainer (format "
            f"{METADATA_FORMAT_VERSION}). Retrain the model to write it, or pass the file that training wrote."
        )
    return metadata


def check_metadata_matches(model_config: ModelConfig, metadata: Mapping[str, Any], features=None) -> None:
    """Refuse metadata that was computed for other features (a different config)."""
    for f in features if features is not None else model_config.features:
        meta = metadata.get(f.name)
        if meta is None or meta.get("type") != f.type:
            found = "is missing" if meta is None else f"has type {meta.get('type')!r}"
            raise DataError(
                f"The {f.type} feature {f.name!r} {found} in the saved training set metadata, so the metadata was "
                "computed for a different config. Use the config the model was trained with (model_hyperparameters), "
                "or retrain."
            )
        keys = ["normalization"] if f.type == "number" else ["lowercase", "most_common"] if f.type == "category" else []
        for key in keys:
            if meta["preprocessing"].get(key) != getattr(f.preprocessing, key):
                raise DataError(
                    f"Feature {f.name!r} has preprocessing.{key} {getattr(f.preprocessing, key)!r} in the config but "
                    f"{meta['preprocessing'].get(key)!r} in the saved training set metadata; the data would be "
                    "transformed differently from training. Use the config the model was trained with, or retrain."
                )
