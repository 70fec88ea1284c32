"""One-value-per-row input columns (number, binary) built as one row-major [rows, k] block.

The model takes these inputs as one [batch, k] block (one fancy-index per batch instead of one
per column), so a dataset's columns must end up row-major. Preprocessing, though, makes them
one column at a time. Copying k finished columns into a new block held both the columns and
the block at once: twice the rows' memory (a 1M-row table of 64 numbers: +205 MB at np=1).

Here the columns are written into a column-major staging area (an anonymous mapping, each
column contiguous and page-aligned), then moved into the row-major block a few thousand rows at
a time, handing each moved part of the staging area back to the system (MADV_DONTNEED) as it
goes: beyond the block, at most one slice of rows is held twice. The staging area is private to
`DenseBlockBuilder`, so no other array ever sees its released pages. Where the system has no
MADV_DONTNEED the block is built the same way and the staging area is only freed at the end.
"""
from __future__ import annotations

import mmap
from typing import Dict, List, Sequence

import numpy as np

#: Rows moved from the staging area into the block at a time (a multiple of a page of float32).
CHUNK_ROWS = 1 << 14


class DenseBlockBuilder:
    """Collects float32 columns `names` (of `rows` values each) and returns them as block views."""

    def __init__(self, names: Sequence[str], rows: int):
        self.names: List[str] = list(names)
        self.rows = int(rows)
        page_floats = mmap.PAGESIZE // 4
        # Each column starts on a page, so that releasing a column's moved rows frees whole pages.
        self._stride = -(-max(self.rows, 1) // page_floats) * page_floats
        self._map = mmap.mmap(-1, self._stride * 4 * max(len(self.names), 1))
        self._staging = np.frombuffer(self._map, dtype=np.float32).reshape(max(len(self.names), 1), self._stride)
        self._filled = [False] * len(self.names)

    def accepts(self, values: np.ndarray) -> bool:
        """Whether `values` can go into the block: one float32 value per row."""
        return isinstance(values, np.ndarray) and values.dtype == np.float32 and values.shape == (self.rows,)

    def put(self, name: str, values: np.ndarray) -> None:
        i = self.names.index(name)
        self._staging[i, : self.rows] = values
        self._filled[i] = True

    def build(self) -> Dict[str, np.ndarray]:
        """{name: block[:, i]} for every column put; the staging area is released."""
        filled = [i for i, done in enumerate(self._filled) if done]
        block = np.empty((self.rows, len(filled)), dtype=np.float32)
        release = getattr(mmap, "MADV_DONTNEED", None)
        for start in range(0, self.rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, self.rows)
            block[start:stop] = self._staging[filled, start:stop].T
            if release is not None:
                for i in filled:
                    offset = (i * self._stride + start) * 4
                    self._map.madvise(release, offset, -(-(stop - start) * 4 // mmap.PAGESIZE) * mmap.PAGESIZE)
        self._staging = None
        self._map.close()
        return {self.names[i]: block[:, j] for j, i in enumerate(filled)}


def block_of(columns: Sequence[np.ndarray]) -> "np.ndarray | None":
    """The [rows, k] block whose columns 0..k-1 are exactly `columns` (views), or None."""
    if not columns:
        return None
    base = columns[0].base
    if not (isinstance(base, np.ndarray) and base.ndim == 2 and base.flags.c_contiguous
            and base.shape == (len(columns[0]), len(columns)) and base.dtype == np.float32):
        return None
    start = base.__array_interface__["data"][0]
    for i, c in enumerate(columns):
        if c.base is not base or c.dtype != base.dtype or c.strides != (base.strides[0],) or \
                c.__array_interface__["data"][0] != start + i * base.itemsize:
            return None
    return base
