"""Reducer: combines per-rank partial statistics of the training set into global ones.

When every rank holds only its shard, training set metadata is computed from partial
statistics: counts, sums, minima and maxima by allreduce, value counts by allgather_object.
When every rank holds all rows (or there is one rank) the reducer is the identity.
"""
from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
import torch


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
