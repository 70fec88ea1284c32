"""Splits decided by one column's values over every rank's rows: `stratify` and `datetime`.

Both need to know where a row stands among all rows of the dataset, not only of this rank's
shard, so each rank shares the few numbers that place its rows (row ids, per class or with their
time) in one allgather_object; every rank then computes the same cut points and assigns its own
rows. The result does not depend on how many ranks read the file.

- stratify (Ludwig's StratifySplitter): every class of the column is split by the
  probabilities on its own. Within a class, rows are ordered by a hash of (seed, row id) and the
  first round(p_train * n) go to training, the next round((p_train + p_val) * n) - that to
  validation, the rest to test. (Ludwig draws with scikit-learn's train_test_split instead; the
  shares per class are the same up to rounding, the rows drawn differ.)
- datetime (Ludwig's DatetimeSplitter): rows sorted by time (ties by row id), the first
  int(p_train * n) to training, the next int(p_val * n) to validation, as Ludwig cuts its sorted
  frame (split_by_slices), and the rest to test (Ludwig's last slice is int(p_test * n) long and
  drops the one or two rows that rounding leaves over; here they stay in test). Missing times sort
  first, as pandas' NaT does in Ludwig.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hvd_trainer.data.split import TEST, TRAINING, VALIDATION, row_uniform
from hvd_trainer.errors import DataError
from hvd_trainer.features.reducer import Reducer

_STRATIFY_STREAM = 3
_MISSING = "\x00missing"


def stratify_keys(values: pa.Array) -> np.ndarray:
    """The class of each row as a string (missing values are a class of their own)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    strings = pc.utf8_trim_whitespace(pc.cast(values, pa.string())) if not pa.types.is_null(values.type) \
        else pa.array([None] * len(values), type=pa.string())
    out = strings.to_numpy(zero_copy_only=False).astype(object)
    out[np.equal(out, None)] = _MISSING
    return out


def stratified_split(classes: np.ndarray, row_ids: np.ndarray, probabilities: Sequence[float], seed: int,
                     reducer: Reducer) -> np.ndarray:
    """Split code per row (0, 1, 2), each class split by `probabilities` over all ranks' rows."""
    local: Dict[str, np.ndarray] = {str(c): row_ids[classes == c] for c in np.unique(classes.astype(str))}
    gathered = reducer.gather(local, name="data.split.stratify")
    codes = np.zeros(len(row_ids), dtype=np.int8)
    for cls in sorted({c for per_rank in gathered for c in per_rank}):
        all_ids = np.concatenate([per_rank[cls] for per_rank in gathered if cls in per_rank]).astype(np.int64)
        n = len(all_ids)
        cut_train = int(round(probabilities[0] * n))
        cut_val = int(round((probabilities[0] + probabilities[1]) * n))
        place = _positions(all_ids, row_uniform(all_ids, seed, _STRATIFY_STREAM))
        mine = classes.astype(str) == cls
        codes[mine] = _codes(_lookup(all_ids, place, row_ids[mine]), cut_train, cut_val)
    return codes


def datetime_keys(values: pa.Array, column: str, path: str, datetime_format: Optional[str]) -> np.ndarray:
    """float64 seconds since the epoch per row (-inf where missing), for ordering only."""
    t = values.type
    if pa.types.is_dictionary(t):
        values, t = values.dictionary_decode(), values.type.value_type
    try:
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            stamps = pc.cast(values, pa.timestamp("s")) if pa.types.is_date(t) else values
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            return _with_missing(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False))
        elif datetime_format:
            stamps = pc.strptime(pc.utf8_trim_whitespace(values), format=datetime_format, unit="s")
        else:
            stamps = pc.cast(pc.utf8_trim_whitespace(values), pa.timestamp("s"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(
            f"The datetime split column {column!r} of {path} holds values that are not dates ({e}). Write them as "
            "ISO 8601 (2021-03-04 or 2021-03-04 05:06:07), or set preprocessing.split.datetime_format to their "
            "strftime format (e.g. '%d/%m/%Y')."
        ) from None
    seconds = pc.cast(pc.cast(stamps, pa.timestamp("s")), pa.int64())
    return _with_missing(pc.cast(seconds, pa.float64()).to_numpy(zero_copy_only=False))


def datetime_split(times: np.ndarray, row_ids: np.ndarray, probabilities: Sequence[float],
                   reducer: Reducer) -> np.ndarray:
    """Split code per row: the oldest rows (over all ranks) to training, then validation, then test."""
    gathered = reducer.gather((row_ids.astype(np.int64), times), name="data.split.datetime")
    all_ids = np.concatenate([ids for ids, _ in gathered])
    all_times = np.concatenate([t for _, t in gathered])
    n = len(all_ids)
    cut_train = int(probabilities[0] * n)
    cut_val = cut_train + int(probabilities[1] * n)
    return _codes(_lookup(all_ids, _positions(all_ids, all_times), row_ids.astype(np.int64)), cut_train, cut_val)


def _with_missing(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def _positions(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each row's place when all rows are ordered by key, ties by row id."""
    order = np.lexsort((ids, keys))
    place = np.empty(len(ids), dtype=np.int64)
    place[order] = np.arange(len(ids))
    return place


def _lookup(all_ids: np.ndarray, place: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """place[] of the given row ids (every one of them is among all_ids)."""
    by_id = np.argsort(all_ids, kind="stable")
    return place[by_id[np.searchsorted(all_ids[by_id], ids)]]


def _codes(place: np.ndarray, cut_train: int, cut_val: int) -> np.ndarray:
    return np.where(place < cut_train, TRAINING, np.where(place < cut_val, VALIDATION, TEST)).astype(np.int8)


__all__: List[str] = ["datetime_keys", "datetime_split", "stratified_split", "stratify_keys"]
