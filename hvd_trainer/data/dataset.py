"""The dataset contract: named numpy columns, and a batcher that shards them across ranks.

Every rank gets a disjoint shard and the same number of steps per epoch (a rank that ran one
step more than another would wait forever in that step's gradient allreduce). The order is
a function of (seed, epoch) only, so a resumed run replays the same batches, and a run at
np=2 with batch b sees, step by step, the same samples as a run at np=1 with batch 2b.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from hvd_trainer.data.dense_block import block_of
from hvd_trainer.errors import DataError


class Dataset:
    """Columns of equal length held in memory.

    `sharded=False`: every rank holds all rows and the batcher picks this rank's share.
    `sharded=True`: each rank already holds only its own rows (read from its part of a file);
    the batcher then only agrees with the other ranks on the number of steps.
    """

    def __init__(self, columns: Mapping[str, np.ndarray], sharded: bool = False, name: str = "dataset"):
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"The columns of {name} have different lengths {lengths}; every column needs one value per row.")
        self.columns: Dict[str, np.ndarray] = dict(columns)
        self._stacked: Dict[tuple, "Dataset"] = {}
        self.sharded = sharded
        self.name = name
        self._len = next(iter(lengths.values())) if lengths else 0

    def __len__(self) -> int:
        return self._len

    def global_size(self, distributed=None) -> int:
        """Rows over all ranks (one allreduce for a sharded dataset)."""
        if not self.sharded or distributed is None or distributed.size() == 1:
            return len(self)
        import torch

        return int(distributed.allreduce(torch.tensor([float(len(self))]), op="sum").item())

    def take(self, index: np.ndarray) -> Dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.columns.items()}

    def stacked(self, block_name: str, names: Sequence[str], dtype=np.float32) -> "Dataset":
        """This dataset with the 1-D columns `names` replaced by one [rows, len(names)] column.

        A batch then costs one fancy-index of the block instead of one per column (64 number
        columns: ~130 us per step of 128 rows, a tenth of a small model's step). Built once per
        dataset and names; the result shares every other column with this one, and this dataset's
        columns `names` become views of the block (the same values), so the rows are held once.
        Columns that are already the columns of one such block (the data pipeline builds number and
        binary inputs that way: dense_block.py) give that block, without a copy.
        """
        key = (block_name, tuple(names), np.dtype(dtype).str)
        cached = self._stacked.get(key)
        if cached is None:
            block = block_of([self.columns[n] for n in names]) if np.dtype(dtype) == np.float32 else None
            if block is None:
                block = np.empty((len(self), len(names)), dtype=dtype)
                for i, n in enumerate(names):
                    block[:, i] = self.columns[n]
                    self.columns[n] = block[:, i]  # the column itself is freed (unless held elsewhere)
            columns = {k: v for k, v in self.columns.items() if k not in set(names)}
            columns[block_name] = block
            cached = self._stacked[key] = Dataset(columns, sharded=self.sharded, name=self.name)
        return cached

    def initialize_batcher(
        self,
        batch_size: int,
        should_shuffle: bool = True,
        random_seed: int = 42,
        distributed=None,
        training: bool = True,
    ) -> "Batcher":
        return Batcher(self, batch_size, should_shuffle, random_seed, distributed, training)


class Batcher:
    """Batches of this rank's shard for one epoch at a time.

    Training batchers pad the shard (by wrapping around the epoch's order) so that every rank
    has the same number of steps. Evaluation batchers (`training=False`) never pad, so that
    no sample is counted twice in a metric; evaluation runs no per-step collectives, so ranks
    may take different numbers of evaluation steps.
    """

    def __init__(self, dataset: Dataset, batch_size: int, should_shuffle: bool, random_seed: int, distributed, training: bool):
        self.dataset = dataset
        self.should_shuffle = should_shuffle
        self.random_seed = int(random_seed)
        self.training = training
        self.rank = distributed.rank() if distributed is not None else 0
        self.size = distributed.size() if distributed is not None else 1
        self._distributed = distributed
        n = len(dataset)
        if dataset.sharded and self.size > 1 and training:
            import torch

            # Each rank holds its own rows: the longest shard sets the steps; others wrap around.
            self.shard_len = int(distributed.allreduce(torch.tensor([float(n)]), op="max").item())
        elif dataset.sharded:
            self.shard_len = n
        elif training:
            self.shard_len = math.ceil(n / self.size) if n else 0
        else:
            self.shard_len = len(range(self.rank, n, self.size))
        self.epoch = 0
        self.step = 0
        self.offset = 0
        self.batch_size = int(batch_size)
        self._order: Optional[np.ndarray] = None
        self.set_epoch(0, batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return self._steps_per_epoch

    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if self.should_shuffle:
            order = np.random.default_rng([self.random_seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        if self.dataset.sharded:
            if self.training and n and self.shard_len > n:
                order = np.resize(order, self.shard_len)
            return order
        if self.training:
            return deal(order, self.offset, self.rank, self.size)
        return order[self.rank :: self.size]

    def set_epoch(self, epoch: int, batch_size: Optional[int] = None, offset: int = 0) -> None:
        """Start epoch `epoch` (0-based) from its first batch, optionally with a new batch size.

        offset: the first `offset` samples of the epoch's order were already trained on (by a world of
        another size, before an elastic membership change); the rest is dealt over this world.
        """
        if batch_size is not None:
            if int(batch_size) < 1:
                raise DataError(f"The batch size must be at least 1, not {batch_size}.")
            self.batch_size = int(batch_size)
        if offset and (self.dataset.sharded or not self.training):
            raise DataError("Only an unsharded training set can start an epoch at a sample offset (elastic training).")
        self.offset = min(int(offset), len(self.dataset))
        # Read twice per training step (last_batch), so computed here, where the batch size changes.
        self._steps_per_epoch = (training_batches(self.shard_len, self.batch_size) if self.training
                                 else math.ceil(self.shard_len / self.batch_size))
        self._steps_this_epoch = self.batches_from(self.offset)
        self.epoch = epoch
        self.step = 0
        self._order = self._epoch_order(epoch)

    def batches_from(self, offset: int) -> int:
        """This epoch's batches per rank when its first `offset` samples were trained on already."""
        if not offset:
            return self._steps_per_epoch
        rows = math.ceil((len(self.dataset) - min(offset, len(self.dataset))) / self.size)
        return training_batches(rows, self.batch_size)

    def samples_consumed(self) -> int:
        """Samples of this epoch's order trained on by the whole world so far (offset included)."""
        return consumed_samples(self.offset, self.step, self.batch_size, self.size, len(self.dataset))

    def skip(self, steps: int) -> None:
        """Move forward `steps` batches in this epoch (resuming in the middle of an epoch)."""
        self.step = min(self.step + steps, self._steps_this_epoch)

    def last_batch(self) -> bool:
        return self.step >= self._steps_this_epoch

    def next_batch(self) -> Dict[str, np.ndarray]:
        start = self.step * self.batch_size
        self.step += 1
        # The last batch takes every row left: at most batch_size, or batch_size + 1 (a lone last row).
        index = self._order[start:] if self.step >= self._steps_this_epoch else self._order[start : start + self.batch_size]
        return self.dataset.take(index)


# ---- where an epoch stands across world sizes (elastic training) ----------------------------------
def deal(order: np.ndarray, offset: int, rank: int, size: int) -> np.ndarray:
    """Rank `rank`'s part of the epoch order after its first `offset` entries (already trained on).

    The rest is padded (wrapping around its own start) to a multiple of `size` and dealt
    round-robin, so that every rank has the same number of batches. In lockstep, the ranks' first
    k batches of b samples then cover exactly the next k*b*size entries of the order: where an
    epoch stands is one number, the samples consumed, whatever the world size was.
    """
    rest = order[offset:]
    total = math.ceil(len(rest) / size) * size
    if len(rest) and total > len(rest):
        rest = np.resize(rest, total)
    return rest[rank::size]


def training_batches(rows: int, batch_size: int) -> int:
    """Training batches of `rows` rows (a rank's part of an epoch: the same on every rank).

    A last batch of one row would break batch norm (Ludwig's batcher skips it: ignore_last); here
    the batch before it takes that row too, so that no sample of the epoch is lost (next_batch gives
    the last batch every row left: batch_size + 1 of them).
    """
    steps = math.ceil(rows / batch_size) if rows else 0
    return steps - 1 if batch_size > 1 and steps > 1 and rows % batch_size == 1 else steps


def consumed_samples(offset: int, batches: int, batch_size: int, size: int, n: int) -> int:
    """Samples of the epoch order consumed after `batches` lockstep batches dealt from `offset` (at most n)."""
    if batches >= training_batches(math.ceil((n - min(offset, n)) / size), batch_size):
        return n  # the epoch's last batch: every row left, however many
    return min(n, offset + batches * batch_size * size)
