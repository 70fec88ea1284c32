"""Entry points from files to Datasets: load_training_data and load_inference_data.

The order of work on every rank:

  read (this rank's shard) -> cast columns -> split -> drop rows with missing values
  -> metadata over the whole training set (collectives) -> transform -> Dataset
  -> (oversample_minority / undersample_majority) balance the training set

Any step that can fail on one rank only (its shard holds the bad value, or the file does not
parse in its byte range) runs locally and then every rank meets in one allgather_object that
carries the error, if any: every rank then raises the same error. No rank is ever left waiting
in a collective that another rank will not reach.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from hvd_trainer.data.balance import balance_training_set
from hvd_trainer.data.column_split import datetime_keys, datetime_split, stratified_split, stratify_keys
from hvd_trainer.data.dataset import Dataset
from hvd_trainer.data.dense_block import DenseBlockBuilder
from hvd_trainer.data.preprocessing import cast_column, compute_metadata, drop_row_mask, transform_column
from hvd_trainer.data.readers import read_table, release_freed_memory
from hvd_trainer.data.split import SPLIT_NAMES, TEST, TRAINING, VALIDATION, fixed_split, random_split, sample_mask
from hvd_trainer.distributed.base import DistributedStrategy, LocalStrategy
from hvd_trainer.errors import ConfigError, DataError
from hvd_trainer.features import check_metadata_matches, feature_type
from hvd_trainer.features.config import FeatureConfig
from hvd_trainer.features.reducer import Reducer
from hvd_trainer.model_config import ModelConfig, SplitConfig

logger = logging.getLogger(__name__)

ROW_ID = "__row_id__"
T = TypeVar("T")
_ERROR_TYPES = {"DataError": DataError, "ConfigError": ConfigError}


# ---- agreeing on errors -------------------------------------------------------------------------
def run_on_every_rank(distributed: DistributedStrategy, name: str, fn: Callable[[], T],
                      share: Callable[[T], Any] = lambda result: None) -> Tuple[T, List[Any]]:
    """Run fn locally, then agree with every rank: (fn's result, [share(result) of each rank]).

    If fn raised on any rank, every rank raises the error of the lowest such rank (an input
    error keeps its type and message; any other exception is re-raised as-is on the rank that
    hit it and reported as a DataError naming that rank on the others).
    """
    result, error, payload = None, None, None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - every failure must reach the collective, or the others hang
        error = e
        kind = type(e).__name__ if type(e).__name__ in _ERROR_TYPES else "internal"
        payload = (distributed.rank(), kind, str(e) if kind != "internal" else f"{type(e).__name__}: {e}")
    gathered = distributed.allgather_object((payload, None if error else share(result)), name=name)
    failures = [p for p, _ in gathered if p is not None]
    if failures:
        rank, kind, message = failures[0]
        if error is not None and rank == distributed.rank():
            raise error  # this rank's own error, with its traceback
        if kind != "internal":
            raise _ERROR_TYPES[kind](message) from None
        raise DataError(
            f"Rank {rank} failed while loading data ({message}); see its traceback in the output of that rank. "
            "Every rank stopped with it."
        )
    return result, [s for _, s in gathered]


# ---- one file -> typed columns --------------------------------------------------------------------
@dataclass
class _Part:
    """Cast columns (keyed by feature name) of one split, on this rank."""

    columns: Dict[str, np.ndarray]
    row_ids: np.ndarray
    path: str

    def __len__(self) -> int:
        return len(self.row_ids)

    def select(self, keep: np.ndarray) -> "_Part":
        if keep.all():  # nothing dropped: no copy of every column
            return self
        return _Part({k: v[keep] for k, v in self.columns.items()}, self.row_ids[keep], self.path)


def _required_columns(features: Sequence[FeatureConfig], extra: Mapping[str, str]) -> Dict[str, str]:
    required: Dict[str, str] = {}
    for f in features:
        required.setdefault(f.column_name, f"the {f.type} feature {f.name!r}")
    for column, user in extra.items():
        required.setdefault(column, user)
    return required


def _load_file(path: str, role: str, features: Sequence[FeatureConfig], dist: DistributedStrategy, sharded: bool,
               split: Optional[SplitConfig] = None) -> Tuple[_Part, Optional[np.ndarray]]:
    """This rank's rows of one file as cast columns, and what the split reads of its column (if any).

    For a fixed split that is the codes; for stratify the classes; for datetime the times.
    """
    rank, size = (dist.rank(), dist.size()) if sharded else (0, 1)
    split_column = split.column_name if split is not None and split.type != "random" else None
    extra = {split_column: f"the {split.type} split (preprocessing.split.column)"} if split_column else {}
    required = _required_columns(features, extra)
    table, counts = run_on_every_rank(dist, f"data.read.{role}", lambda: read_table(path, required, rank, size, role),
                                      share=lambda t: t.num_rows)
    total = sum(counts) if sharded else counts[0]
    if total == 0:
        raise DataError(
            f"The {role} file {path} has no data rows (only a header, or nothing). Check that it is the right file "
            "and that it was written completely."
        )
    if table.row_ids is None:  # a CSV shard learns its first global row from the ranks before it
        table = table.with_row_offset(sum(counts[:rank]))

    def cast() -> Tuple[_Part, Optional[np.ndarray]]:
        # Each raw column is dropped once its last feature is cast: the file is never held twice.
        uses = Counter([f.column_name for f in features] + ([split_column] if split_column else []))
        cols = {}
        for f in features:
            cols[f.name] = cast_column(table.columns[f.column_name], f, table.row_ids, path)
            uses[f.column_name] -= 1
            if not uses[f.column_name]:
                del table.columns[f.column_name]
        codes = _split_values(split, table.columns[split_column], table.row_ids, path) if split_column else None
        table.columns.clear()
        release_freed_memory()
        return _Part(cols, table.row_ids, path), codes

    (part, codes), _ = run_on_every_rank(dist, f"data.cast.{role}", cast)
    return part, codes


def _split_values(split: SplitConfig, values, row_ids: np.ndarray, path: str) -> np.ndarray:
    if split.type == "fixed":
        return fixed_split(values, row_ids, split.column_name, path)
    if split.type == "stratify":
        return stratify_keys(values)
    return datetime_keys(values, split.column_name, path, split.datetime_format)


def _split_codes(split: SplitConfig, values: Optional[np.ndarray], row_ids: np.ndarray, seed: int,
                 reducer: Reducer) -> np.ndarray:
    """Split code per row of this rank (stratify and datetime agree with every rank on their cut points)."""
    if split.type == "random":
        return random_split(row_ids, split.probabilities, seed)
    if split.type == "stratify":
        return stratified_split(values, row_ids, split.probabilities, seed, reducer)
    if split.type == "datetime":
        return datetime_split(values, row_ids, split.probabilities, reducer)
    return values


# ---- training data ----------------------------------------------------------------------------------
def load_training_data(
    model_config: ModelConfig,
    distributed: Optional[DistributedStrategy] = None,
    dataset: Optional[str] = None,
    training_set: Optional[str] = None,
    validation_set: Optional[str] = None,
    test_set: Optional[str] = None,
    random_seed: int = 42,
    shard: bool = True,
    metadata: Optional[Dict[str, Any]] = None,
) -> Tuple[Dataset, Optional[Dataset], Optional[Dataset], Dict[str, Any]]:
    """(training, validation, test, metadata) from one dataset (split by the config) or separate files.

    With shard=True and several ranks, each rank reads only its part of each file and the
    Datasets are `sharded=True`; metadata is still computed over the whole training set.
    Pass `metadata` (from load_metadata) to apply saved metadata instead of computing it
    (resuming). Validation or test is None when it has no rows.
    """
    dist = distributed if distributed is not None else LocalStrategy()
    _check_sources(dataset, training_set, validation_set, test_set)
    sharded = bool(shard) and dist.size() > 1
    features = model_config.features
    pre = model_config.preprocessing

    if dataset is not None:
        whole, values = _load_file(dataset, "dataset", features, dist, sharded, pre.split)
        keep = sample_mask(whole.row_ids, pre.sample_ratio, random_seed)
        whole = whole.select(keep)
        codes = _split_codes(pre.split, values[keep] if values is not None else None, whole.row_ids, random_seed,
                             Reducer(dist, sharded))
        parts = {s: whole.select(codes == s) for s in (TRAINING, VALIDATION, TEST)}
        del whole  # the splits are copies: drop the file's rows before metadata and transforms
    else:
        parts = {}
        for s, path in ((TRAINING, training_set), (VALIDATION, validation_set), (TEST, test_set)):
            if path is not None:
                part, _ = _load_file(path, f"{SPLIT_NAMES[s]} set", features, dist, sharded)
                parts[s] = part.select(sample_mask(part.row_ids, pre.sample_ratio, random_seed))
    parts = {s: p.select(drop_row_mask(p.columns, features)) for s, p in parts.items()}

    counts = _global_counts(dist, parts, sharded)
    if counts[TRAINING] == 0:
        raise DataError(
            "The training set is empty after splitting, sampling and dropping rows with missing values. Check "
            "preprocessing.split (the training share or the split column's 0 values), sample_ratio, and the "
            "features whose missing_value_strategy is drop_row."
        )
    if metadata is None:
        metadata = compute_metadata(model_config, parts[TRAINING].columns, Reducer(dist, sharded))
    else:
        check_metadata_matches(model_config.features, metadata)
    datasets = _transform_parts(dist, parts, counts, metadata, sharded, dense_inputs(model_config))
    if pre.oversample_minority or pre.undersample_majority:
        datasets[TRAINING] = balance_training_set(
            datasets[TRAINING], model_config.output_features[0].name, pre.oversample_minority,
            pre.undersample_majority, random_seed, dist.rank(), Reducer(dist, sharded))
    return datasets[TRAINING], datasets.get(VALIDATION), datasets.get(TEST), metadata


def _check_sources(dataset, training_set, validation_set, test_set) -> None:
    if dataset is not None and any(p is not None for p in (training_set, validation_set, test_set)):
        raise ConfigError(
            "Both a dataset and separate training/validation/test sets were given. Pass either --dataset (split "
            "by preprocessing.split) or --training_set with optional --validation_set and --test_set."
        )
    if dataset is None and training_set is None:
        raise ConfigError(
            "No training data was given. Pass --dataset (one file, split by preprocessing.split) or "
            "--training_set (with optional --validation_set and --test_set)."
        )


def _global_counts(dist: DistributedStrategy, parts: Mapping[int, _Part], sharded: bool) -> Dict[int, int]:
    local = [len(parts[s]) if s in parts else 0 for s in (TRAINING, VALIDATION, TEST)]
    if not sharded:
        return dict(zip((TRAINING, VALIDATION, TEST), local))
    per_rank = dist.allgather_object(local, name="data.split_counts")
    totals = [sum(r[i] for r in per_rank) for i in range(3)]
    empty = [r for r, c in enumerate(per_rank) if c[TRAINING] == 0]
    if totals[TRAINING] and empty:
        raise DataError(
            f"Rank {empty[0]}'s part of the data holds no training rows (training rows per rank: "
            f"{[c[TRAINING] for c in per_rank]}), so it could not take part in training steps. The data is too "
            f"small to shard over {dist.size()} ranks: run fewer ranks, or load it unsharded (every rank reads "
            "all rows)."
        )
    return dict(zip((TRAINING, VALIDATION, TEST), totals))


def _transform_parts(dist: DistributedStrategy, parts: Mapping[int, _Part], counts: Mapping[int, int],
                     metadata: Mapping[str, Any], sharded: bool, dense: Sequence[str]) -> Dict[int, Dataset]:
    def transform():
        unknown: Dict[str, int] = {}
        out = {s: _to_columns(p, metadata, unknown, dense) for s, p in parts.items() if counts[s] > 0}
        return out, unknown

    (columns, _), unknowns = run_on_every_rank(dist, "data.transform", transform, share=lambda r: r[1])
    _log_unknown(unknowns if sharded else unknowns[:1])
    return {s: Dataset(cols, sharded=sharded, name=f"{SPLIT_NAMES[s]} set") for s, cols in columns.items()}


def _to_columns(part: _Part, metadata: Mapping[str, Any], unknown: Dict[str, int],
                dense: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Transformed columns of a part; the inputs in `dense` (number, binary) as the columns of one block.

    Each cast column is dropped once transformed (the part is not used again), so that a split
    is never held both cast and transformed; the dense inputs go straight into their block,
    never held both as columns and as the block the model takes them in (dense_block.py).
    """
    names = list(part.columns)
    in_block = [n for n in dense if n in part.columns]
    block = DenseBlockBuilder(in_block, len(part)) if in_block else None
    cols = {}
    for name in names:
        values = transform_column(part.columns.pop(name), metadata[name], name, part.row_ids, part.path, unknown)
        if block is not None and name in block.names and block.accepts(values):
            block.put(name, values)
        else:
            cols[name] = values
        del values
        release_freed_memory()
    if block is not None:
        cols.update(block.build())
    cols = {name: cols[name] for name in names}  # the file's column order, whichever went into the block
    cols[ROW_ID] = part.row_ids
    return cols


def dense_inputs(model_config: ModelConfig) -> List[str]:
    """The input features the model takes as one [rows, k] block, in its order (number and binary)."""
    return [f.name for f in model_config.input_features if feature_type(f.type).dense_input]


def _log_unknown(per_rank: List[Dict[str, int]]) -> None:
    total: Dict[str, int] = {}
    for counts in per_rank:
        for name, n in (counts or {}).items():
            total[name] = total.get(name, 0) + n
    for name, n in total.items():
        logger.info("%d value(s) (or set items, text tokens) of feature %r were not seen in training and map to "
                    "<UNK>.", n, name)


# ---- inference data -------------------------------------------------------------------------------------
def load_inference_data(
    model_config: ModelConfig,
    metadata: Mapping[str, Any],
    path: str,
    distributed: Optional[DistributedStrategy] = None,
    shard: bool = False,
    include_targets: bool = True,
    split: Optional[str] = None,
    random_seed: int = 42,
) -> Dataset:
    """Rows of `path` transformed with saved metadata (evaluate, predict), with a `__row_id__` column.

    include_targets=False reads only the input features (predict on data without labels).
    split='training'|'validation'|'test' keeps only that split of the file, as training split
    it (same config and random_seed).
    """
    dist = distributed if distributed is not None else LocalStrategy()
    sharded = bool(shard) and dist.size() > 1
    features = list(model_config.input_features) + (list(model_config.output_features) if include_targets else [])
    check_metadata_matches(features, metadata)
    pre = model_config.preprocessing
    codes_wanted = _split_code(split)
    part, values = _load_file(path, "prediction data" if not include_targets else "evaluation data", features, dist,
                              sharded, pre.split if codes_wanted is not None else None)
    if codes_wanted is not None:
        keep = sample_mask(part.row_ids, pre.sample_ratio, random_seed)
        part = part.select(keep)
        codes = _split_codes(pre.split, values[keep] if values is not None else None, part.row_ids, random_seed,
                             Reducer(dist, sharded))
        part = part.select(codes == codes_wanted)
    part = part.select(drop_row_mask(part.columns, features))

    def transform():
        unknown: Dict[str, int] = {}
        return _to_columns(part, metadata, unknown, dense_inputs(model_config)), unknown

    (columns, _), unknowns = run_on_every_rank(dist, "data.transform_inference", transform, share=lambda r: r[1])
    _log_unknown(unknowns if sharded else unknowns[:1])
    return Dataset(columns, sharded=sharded, name="prediction data" if not include_targets else "evaluation data")


def _split_code(split: Optional[str]) -> Optional[int]:
    if split is None:
        return None
    names = {v: k for k, v in SPLIT_NAMES.items()}
    if split not in names:
        raise ConfigError(f"The split {split!r} is not one of: training, validation, test.")
    return names[split]


# ---- checks the trainer and CLI call ------------------------------------------------------------------------
def check_enough_rows(n_rows: int, world_size: int, batch_size: Union[int, str, None]) -> None:
    """Refuse a training set too small for every rank to fill one batch per step.

    A batch size of at least the whole training set is full-batch training (Ludwig's lbfgs example
    writes `batch_size: 32769 # entire training set`): each rank's one batch per epoch is then all of
    its rows, as it would be in one process, so it is accepted at any number of ranks.
    """
    per_batch = int(batch_size) if isinstance(batch_size, int) and not isinstance(batch_size, bool) else 1
    needed = world_size * per_batch
    if n_rows >= needed:
        return
    if per_batch >= n_rows >= world_size:
        logger.info("trainer.batch_size %d covers the whole training set (%d rows): full-batch training, each of the "
                    "%d ranks takes all of its rows in one step per epoch.", per_batch, n_rows, world_size)
        return
    if per_batch == 1 or n_rows < world_size:
        raise DataError(
            f"The training set has {n_rows} row(s), fewer than the {world_size} ranks of this job; every rank "
            f"needs at least one row per step. Run at most {n_rows} ranks, or add rows."
        )
    raise DataError(
        f"The training set has {n_rows} rows, but {world_size} ranks x batch size {per_batch} need at least "
        f"{needed}: every rank must fill one batch per step. Lower trainer.batch_size to "
        f"{max(1, n_rows // world_size)} or less, run fewer ranks, or add rows."
    )
