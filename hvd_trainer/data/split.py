"""Assigning rows to training (0), validation (1) and test (2).

A random split must not depend on how many ranks read the file, so a row's split is a pure
function of (seed, global row index): a counter-based hash (SplitMix64) turns the pair into a
uniform number in [0, 1), compared with the cumulative probabilities. The same function draws
`sample_ratio`, with another stream, so sampling and splitting are independent.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from hvd_trainer.errors import DataError

TRAINING, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {TRAINING: "training", VALIDATION: "validation", TEST: "test"}
_SPLIT_STREAM, _SAMPLE_STREAM = 1, 2
_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, vectorised over uint64 (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_uniform(row_ids: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform number in [0, 1) per row, fixed by (seed, stream, row index)."""
    key = _splitmix64(np.array([(int(seed) & _MASK64)], dtype=np.uint64) ^ np.uint64(stream))
    z = _splitmix64(np.asarray(row_ids, dtype=np.int64).astype(np.uint64) ^ key)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def random_split(row_ids: np.ndarray, probabilities: Sequence[float], seed: int) -> np.ndarray:
    """Split code (0, 1, 2) per row, drawn with the given probabilities."""
    edges = np.cumsum(np.asarray(probabilities, dtype=np.float64))[:2]
    return np.searchsorted(edges, row_uniform(row_ids, seed, _SPLIT_STREAM), side="right").astype(np.int8)


def sample_mask(row_ids: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Which rows `preprocessing.sample_ratio` keeps."""
    if ratio >= 1.0:
        return np.ones(len(row_ids), dtype=bool)
    return row_uniform(row_ids, seed, _SAMPLE_STREAM) < ratio


def fixed_split(values: pa.Array, row_ids: np.ndarray, column: str, path: str) -> np.ndarray:
    """Split codes read from a column of 0/1/2 (numbers or strings, as Ludwig writes them)."""
    raw = values.to_pylist()
    codes = np.empty(len(raw), dtype=np.int8)
    lookup = {0: 0, 1: 1, 2: 2, "0": 0, "1": 1, "2": 2, "0.0": 0, "1.0": 1, "2.0": 2}
    for i, v in enumerate(raw):
        key = v.strip() if isinstance(v, str) else v
        code = lookup.get(key) if not isinstance(key, bool) else None
        if code is None:
            raise DataError(
                f"The split column {column!r} of {path} holds {v!r} in row {int(row_ids[i])} (counting data rows "
                "from 0), but a fixed split needs 0 (training), 1 (validation) or 2 (test) in every row. Fix the "
                "value, or use preprocessing.split.type: random."
            )
        codes[i] = code
    return codes
