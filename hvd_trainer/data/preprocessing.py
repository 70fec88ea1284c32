"""Preprocessing: raw columns -> typed values -> metadata (over the whole training set) -> model arrays.

Three steps, each a function of its inputs only; what each step does to a column is up to the
feature's type (hvd_trainer.features), and this module runs the steps over all features:

1. `cast_column` parses one raw column (pyarrow) into typed values with missing values marked
   (number: float64, or float32 for a float32 column, with NaN; category and binary: object arrays of str with None). Errors
   name the column, the value and its row.
2. `compute_metadata` builds training_set_metadata from the training rows. When every rank
   holds only its shard, partial statistics are combined through a `Reducer`: value counts
   (vocabularies, modes) of every feature in one allgather_object, then each type's own
   collectives (a number's sums, minima, maxima and squared deviations by allreduce).
3. `transform_column` applies saved metadata to any split or new data without recomputing it:
   fill, normalise, look up vocabularies. A category never seen in training maps to <UNK>.

The metadata is plain JSON (Ludwig's names: idx2str, str2idx, str2freq, vocab_size, mean, std,
min, max, str2bool, bool2str, computed_fill_value), written atomically by rank 0.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from hvd_trainer.checkpoint import atomic_write_text
from hvd_trainer.errors import DataError
from hvd_trainer.features import FEATURE_TYPES, feature_type
from hvd_trainer.features.arrays import missing_mask
from hvd_trainer.features.config import FeatureConfig
from hvd_trainer.features.reducer import Reducer
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.run_layout import TRAINING_SET_METADATA

METADATA_FORMAT_VERSION = 1
INFO_KEY = "__hvd_trainer__"


# ---- 1. casting raw columns -----------------------------------------------------------------
def cast_column(array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    """Typed values of one feature's column, with missing values as NaN (number) or None."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return feature_type(feature.type).cast(array, feature, row_ids, path)


def drop_row_mask(columns: Mapping[str, np.ndarray], features: Sequence[FeatureConfig]) -> np.ndarray:
    """Rows to keep: those with a value in every feature whose strategy is drop_row."""
    n = len(next(iter(columns.values()))) if columns else 0
    keep = np.ones(n, dtype=bool)
    for f in features:
        if f.preprocessing.missing_value_strategy == "drop_row" and f.name in columns:
            keep &= ~missing_mask(columns[f.name])
    return keep


# ---- 2. metadata ------------------------------------------------------------------------------
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
    counted = [f for f in features if feature_type(f.type).needs_value_counts(f)]
    local_counts = {f.name: _value_counts(columns[f.name]) for f in counted}
    merged = _merge_counts(reducer.gather(local_counts, name="data.metadata.value_counts"), [f.name for f in counted])

    metadata: Dict[str, Any] = {INFO_KEY: {"format_version": METADATA_FORMAT_VERSION, "training_rows": n_rows}}
    for ftype in FEATURE_TYPES.values():  # the registry's order: the same collectives on every rank
        of_type = [f for f in features if f.type == ftype.name]
        if of_type:
            metadata.update(ftype.metadata(of_type, columns, merged, reducer))
    return {k: metadata[k] for k in [INFO_KEY] + [f.name for f in features]}


def _value_counts(values: np.ndarray) -> Tuple[Dict[Any, int], int]:
    missing = missing_mask(values)
    present = values[~missing]
    if values.dtype != object:
        uniq, counts = np.unique(present, return_counts=True)
        return dict(zip(uniq.tolist(), counts.tolist())), int(missing.sum())
    return dict(Counter(present.tolist())), int(missing.sum())


def _merge_counts(per_rank: List[Dict[str, Any]], names: List[str]) -> Dict[str, Tuple[Counter, int]]:
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


# ---- 3. transforms ------------------------------------------------------------------------------
def transform_column(values: np.ndarray, meta: Mapping[str, Any], name: str, row_ids: np.ndarray, path: str,
                     unknown_counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Model-ready array of one cast column, using saved metadata only."""
    return feature_type(meta["type"]).transform(values, meta, name, row_ids, path, unknown_counts)


def decode_predictions(meta: Mapping[str, Any], predictions: np.ndarray) -> np.ndarray:
    """Predictions in the data's own terms: category labels, binary labels, numbers unnormalised."""
    return feature_type(meta["type"]).decode(meta, np.asarray(predictions))


# ---- save / load ---------------------------------------------------------------------------------
def metadata_path(path: str) -> str:
    """training_set_metadata.json inside `path` when it is a directory, else `path` itself."""
    return os.path.join(path, TRAINING_SET_METADATA) if os.path.isdir(path) or not path.endswith(".json") else path


def save_metadata(metadata: Mapping[str, Any], path: str, distributed=None) -> str:
    """Write the metadata as JSON (only the coordinator writes; atomically). Returns the file path."""
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
