"""preprocessing.oversample_minority / undersample_majority: Ludwig's class balancing of the training set.

Ludwig's rule (ludwig.data.preprocessing.balance_data), for the one binary output, on the
training set only, after the metadata is computed:

- oversample_minority r: the minority class is drawn with replacement to
  round(n_majority * r) rows (pandas' `sample(frac=n_majority * r / n_minority)`);
- undersample_majority r: the majority class is drawn without replacement to
  int(n_minority / r) rows (pandas' `sample(frac=int(n_minority / r) / n_majority)`).

With sharded data each rank holds part of each class. The class counts are agreed by one
allgather, so every rank computes the same total; the total is dealt out over the ranks in
proportion to the rows of that class each holds (largest remainder, ties to the lower rank), and
each rank draws its share from its own rows. The row count of the balanced training set is thus
exactly Ludwig's at any number of ranks; which duplicates are drawn depends on the ranks.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import numpy as np

from hvd_trainer.data.dataset import Dataset
from hvd_trainer.errors import DataError
from hvd_trainer.features.reducer import Reducer

logger = logging.getLogger(__name__)

_BALANCE_STREAM = 0xBA1


def balanced_total(n_majority: int, n_minority: int, oversample: Optional[float],
                   undersample: Optional[float]) -> int:
    """The number of rows Ludwig's rule gives the resampled class (the minority when oversampling)."""
    if oversample:
        return int(round(n_majority * oversample / n_minority * n_minority))
    return int(round(int(n_minority / undersample) / n_majority * n_majority))


def shares(total: int, held: Sequence[int]) -> List[int]:
    """`total` dealt out in proportion to `held` (largest remainder; ties to the lower index)."""
    whole = sum(held)
    exact = [total * h / whole for h in held]
    out = [int(e) for e in exact]
    by_remainder = sorted(range(len(held)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def balance_training_set(train: Dataset, target: str, oversample: Optional[float], undersample: Optional[float],
                         seed: int, rank: int, reducer: Reducer) -> Dataset:
    """The training set with its binary target's classes resampled by Ludwig's rule (see the module doc)."""
    y = np.asarray(train.columns[target])
    local = [int(np.sum(y == 0)), int(np.sum(y == 1))]
    per_rank = reducer.gather(local, name="data.balance.class_counts")
    totals = [sum(c[0] for c in per_rank), sum(c[1] for c in per_rank)]
    key = "oversample_minority" if oversample else "undersample_majority"
    if min(totals) == 0 or totals[0] == totals[1]:
        raise DataError(
            f"preprocessing.{key} balances the two classes of {target!r}, but its training rows hold "
            f"{totals[0]} false and {totals[1]} true: there is no minority class to balance. Remove "
            f"preprocessing.{key}, or check the target column and the split."
        )
    majority = 0 if totals[0] > totals[1] else 1
    minority = 1 - majority
    drawn_class = minority if oversample else majority
    total = balanced_total(totals[majority], totals[minority], oversample, undersample)
    if undersample and total > totals[majority]:
        raise DataError(
            f"preprocessing.undersample_majority {undersample} asks for {total} rows of the majority class of "
            f"{target!r}, but it has only {totals[majority]} (minority: {totals[minority]}); undersampling cannot add "
            f"rows. Use a ratio of at least {totals[minority] / totals[majority]:.4g}, or oversample_minority."
        )
    mine = shares(total, [c[drawn_class] for c in per_rank])[rank if len(per_rank) > 1 else 0]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _BALANCE_STREAM, rank if len(per_rank) > 1 else 0])
    candidates = np.flatnonzero(y == drawn_class)
    drawn = rng.choice(candidates, size=mine, replace=bool(oversample)) if mine else candidates[:0]
    keep = np.sort(np.concatenate([drawn, np.flatnonzero(y != drawn_class)]))
    sizes = reducer.gather(len(keep), name="data.balance.rows")
    if min(sizes) == 0:
        raise DataError(
            f"After preprocessing.{key}, rank {sizes.index(0)}'s part of the training set is empty (rows per rank: "
            f"{sizes}), so it could not take part in training steps. Run fewer ranks, or load the data unsharded."
        )
    logger.info("preprocessing.%s %s: the training set's %s class of %r has %d rows (was %d), the other %d.",
                key, oversample or undersample, "minority" if oversample else "majority", target, total,
                totals[drawn_class], totals[1 - drawn_class])
    return Dataset(train.take(keep), sharded=train.sharded, name=train.name)
