"""Reading CSV and Parquet files: the whole file, or only this rank's part of it.

Each rank of a sharded read holds roughly 1/size of the rows, so memory per rank falls as the
number of ranks grows:

- CSV: the bytes after the header are cut into `size` equal ranges; a line belongs to the rank
  whose range holds its first byte (each cut is moved forward to the next line start). A quoted
  value that spans several lines is therefore not supported in sharded reads.
- Parquet: row groups are dealt round-robin, and each rank reads only its own, one at a time
  (integer and float columns straight into buffers of their final size); a file with
  fewer row groups than ranks is read one column at a time and each rank keeps a contiguous
  slice of rows.

Every column is returned as a pyarrow array: CSV columns are strings (type inference per shard
could disagree between ranks; preprocessing parses them with errors that name the row),
Parquet columns keep their stored types. Rows carry their global index in the file
(`row_ids`), which the random split and the prediction order depend on. For a CSV shard that
index is only known once every rank has counted its rows, so `row_ids` is None until the
caller calls `RawTable.with_row_offset`.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import pyarrow as pa

from hvd_trainer.config_schema import did_you_mean
from hvd_trainer.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
# pandas' default missing-value markers (Ludwig reads CSV with pandas).
NULL_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
               "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
_BOM = b"\xef\xbb\xbf"


@dataclass
class RawTable:
    """Columns read from one file (all rows, or one rank's share of them)."""

    path: str
    columns: Dict[str, pa.Array]
    num_rows: int
    #: Global 0-based index of each row in the file (None until offset, for CSV shards).
    row_ids: Optional[np.ndarray]

    def with_row_offset(self, offset: int) -> "RawTable":
        """Give a CSV shard its global row indices, once the rows before it are counted."""
        return RawTable(self.path, self.columns, self.num_rows, offset + np.arange(self.num_rows, dtype=np.int64))


def release_freed_memory() -> None:
    """Hand memory that Arrow has freed back to the system.

    Arrow's allocator (mimalloc or jemalloc) keeps freed pages for its own next allocations, but
    the arrays that preprocessing makes from Arrow's columns are numpy's (malloc), which cannot
    use them: a dropped raw or cast column would still count in the process's memory while its
    replacement is allocated next to it.
    """
    pa.default_memory_pool().release_unused()


def file_format(path: str) -> str:
    """'csv', 'tsv' or 'parquet', from the file name; a clear error for anything else."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        first = "Decompress it first, then use" if ext in (".gz", ".bz2", ".zip", ".xz", ".zst") else "Use"
        raise DataError(
            f"The file {path} has the extension {ext or '(none)'!r}, which hvd_trainer cannot read. {first} a CSV "
            "(.csv, .tsv) or Parquet (.parquet, .pq) file, named with its extension."
        )
    return FORMATS[ext]


def check_path(path: str, role: str) -> str:
    """The format of an existing, readable data file; clear errors otherwise."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise DataError(f"The {role} path is {path!r}; pass the path of a CSV or Parquet file.")
    path = str(path)
    if not os.path.exists(path):
        raise DataError(
            f"The {role} file {path} does not exist (relative paths start from {os.getcwd()}). Check the path, "
            "and on a cluster make sure every node sees the file at the same path."
        )
    if os.path.isdir(path):
        raise DataError(f"The {role} path {path} is a directory; pass one CSV or Parquet file.")
    fmt = file_format(path)
    if not os.access(path, os.R_OK):
        raise DataError(f"The {role} file {path} is not readable by this user; fix its permissions.")
    return fmt


def read_table(path: str, required: Mapping[str, str], rank: int = 0, size: int = 1, role: str = "dataset") -> RawTable:
    """Read the columns in `required` ({column: who needs it}) from this rank's share of `path`."""
    fmt = check_path(path, role)
    if fmt == "parquet":
        return _read_parquet(str(path), required, rank, size, role)
    return _read_csv(str(path), required, rank, size, role, "\t" if fmt == "tsv" else ",")


def _check_columns(path: str, names: List[str], required: Mapping[str, str], role: str) -> None:
    for column, user in required.items():
        if column not in names:
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            raise DataError(
                f"The {role} file {path} has no column {column!r}, which {user} reads.{did_you_mean(column, names)} "
                f"Its columns are: {shown}. Fix the column name in the config (the feature's name or 'column:', or "
                "preprocessing.split.column for a fixed split), or use a file with that column."
            )


# ---- CSV ------------------------------------------------------------------------------------
def _parse_error(path: str, role: str, e: Exception, where: str) -> DataError:
    return DataError(
        f"The {role} file {path} could not be parsed as CSV{where}: {e}. Every line needs the same number of "
        "fields as the header, with quotes closed on the same line and UTF-8 text; fix the line shown or "
        "convert the file to Parquet."
    )


def _csv_header(path: str, delimiter: str, role: str):
    import pyarrow.csv as pacsv

    with open(path, "rb") as fh:
        first = fh.readline()
    header = first[len(_BOM):] if first.startswith(_BOM) else first
    if not header.strip():
        raise DataError(
            f"The {role} file {path} is empty or starts with a blank line; a CSV file needs a header line with the "
            "column names, then one line per row."
        )
    try:
        names = pacsv.read_csv(io.BytesIO(header), parse_options=pacsv.ParseOptions(delimiter=delimiter)).column_names
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _parse_error(path, role, e, " (its header line)") from None
    return names, len(first)


def _align_to_line(fh, pos: int, data_start: int) -> int:
    """The first line start at or after pos (a line starting exactly at pos counts)."""
    if pos <= data_start:
        return data_start
    fh.seek(pos - 1)
    fh.readline()
    return fh.tell()


def _read_csv(path: str, required: Mapping[str, str], rank: int, size: int, role: str, delimiter: str) -> RawTable:
    import pyarrow.csv as pacsv

    names, data_start = _csv_header(path, delimiter, role)
    _check_columns(path, names, required, role)
    total = os.path.getsize(path)
    span = total - data_start
    with open(path, "rb") as fh:
        start = _align_to_line(fh, data_start + span * rank // size, data_start)
        end = total if rank == size - 1 else _align_to_line(fh, data_start + span * (rank + 1) // size, data_start)
        fh.seek(start)
        chunk = fh.read(max(0, end - start))
    columns = list(required)
    if not chunk.strip():
        empty = {c: pa.array([], type=pa.string()) for c in columns}
        return RawTable(path, empty, 0, np.arange(0, dtype=np.int64) if size == 1 else None)
    try:
        table = pacsv.read_csv(
            io.BytesIO(chunk),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, include_columns=columns,
                strings_can_be_null=True, null_values=NULL_VALUES,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        where = "" if size == 1 else f" (in bytes {start}-{end}, the part read by rank {rank} of {size})"
        raise _parse_error(path, role, e, where) from None
    n_rows = table.num_rows
    del chunk  # the shard's text: parsed, no longer needed
    tables = [table]
    del table
    cols = _table_columns(tables.pop, columns)
    row_ids = np.arange(n_rows, dtype=np.int64) if size == 1 else None
    return RawTable(path, cols, n_rows, row_ids)


# ---- Parquet ----------------------------------------------------------------------------------
def _read_parquet(path: str, required: Mapping[str, str], rank: int, size: int, role: str) -> RawTable:
    import pyarrow.parquet as pq

    columns = list(required)
    try:
        # pre_buffer (pyarrow's default) keeps the file's compressed column chunks in memory as
        # long as the file is open: as much again as the decoded columns, for no gain on a local file.
        pf = pq.ParquetFile(path, pre_buffer=False)
        names = pf.schema_arrow.names
        _check_columns(path, names, required, role)
        group_rows = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)
        n_rows = int(starts[-1])
        if size == 1 or len(group_rows) >= size:
            mine = list(range(rank, len(group_rows), size))
            cols = _read_row_groups(pf, mine, columns, sum(group_rows[g] for g in mine))
            row_ids = np.concatenate([np.arange(starts[g], starts[g + 1], dtype=np.int64) for g in mine] +
                                     [np.arange(0, dtype=np.int64)])
        else:
            lo, hi = n_rows * rank // size, n_rows * (rank + 1) // size
            cols = _table_columns(lambda: _read_parquet_rows(pf, columns, lo, hi), columns)
            row_ids = np.arange(lo, hi, dtype=np.int64)
    except DataError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"The {role} file {path} could not be read as Parquet: {str(e).rstrip('.')}. Check that the file is complete (not "
            "truncated by a copy) and was written as Parquet; rewrite it, or use CSV."
        ) from None
    return RawTable(path, cols, len(row_ids), row_ids)


def _read_row_groups(pf, groups: List[int], columns: List[str], rows: int) -> Dict[str, pa.Array]:
    """The columns of row groups `groups`, read one row group at a time.

    Arrow builds a column read from many row groups at once in growing buffers: a 208 MB table
    took 330 MB, the rest kept by Arrow's allocator. Here each row group's integer and float
    columns are copied into buffers of their final size as it is read, so that beyond the columns
    only one row group is held; other columns (strings, booleans, ...) are joined at the end.
    """
    schema = pf.schema_arrow
    fixed = {c: _FixedWidthColumn(schema.field(c).type, rows) for c in columns if _is_fixed_width(schema.field(c).type)}
    chunks: Dict[str, List[pa.Array]] = {c: [] for c in columns if c not in fixed}
    position = 0
    for g in groups:
        table = pf.read_row_group(g, columns=columns)
        for c in columns:
            at = position  # a row group's column may come in several chunks
            for chunk in table.column(c).chunks:
                if c in fixed:
                    fixed[c].put(chunk, at)
                else:
                    chunks[c].append(chunk)
                at += len(chunk)
        position += table.num_rows
        del table
    return {c: fixed[c].array() if c in fixed else _joined(chunks.pop(c), schema.field(c).type) for c in columns}


def _is_fixed_width(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _joined(chunks: List[pa.Array], t: pa.DataType) -> pa.Array:
    if not chunks:
        return pa.array([], type=t)
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)


class _FixedWidthColumn:
    """An integer or float column filled chunk by chunk into one numpy buffer (and a validity mask
    once a chunk has nulls); `array()` wraps them as an Arrow array without a copy."""

    def __init__(self, t: pa.DataType, rows: int):
        self.type, self.rows = t, rows
        self.values = np.empty(rows, dtype=t.to_pandas_dtype())
        self.valid: Optional[np.ndarray] = None
        self.filled = 0

    def put(self, chunk: pa.Array, position: int) -> None:
        n = len(chunk)
        raw = np.frombuffer(chunk.buffers()[1], dtype=self.values.dtype, count=chunk.offset + n)
        self.values[position:position + n] = raw[chunk.offset:]
        if chunk.null_count:
            if self.valid is None:
                self.valid = np.ones(self.rows, dtype=bool)
            self.valid[position:position + n] = chunk.is_valid().to_numpy(zero_copy_only=False)
        self.filled = position + n

    def array(self) -> pa.Array:
        assert self.filled == self.rows, (self.filled, self.rows)
        nulls = 0 if self.valid is None else int(self.rows - np.count_nonzero(self.valid))
        bitmap = pa.py_buffer(np.packbits(self.valid, bitorder="little")) if nulls else None
        return pa.Array.from_buffers(self.type, self.rows, [bitmap, pa.py_buffer(self.values)], null_count=nulls)


def _table_columns(read: Callable[[], pa.Table], columns: List[str]) -> Dict[str, pa.Array]:
    """Each column of the table `read` returns as one array.

    A table read from several row groups (or CSV blocks) holds each column in chunks, and one
    array per column is a copy of them. Each column leaves the table as soon as it is copied
    (this function holds the only reference to the table), so that the file is never held
    twice: beyond the columns, at most one column's chunks.
    """
    table = read()
    cols = {}
    for c in columns:
        cols[c] = _one_array(table.column(c))
        table = table.drop_columns([c])
    return cols


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array; a single chunk as it is (combine_chunks would copy it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _read_parquet_rows(pf, columns: List[str], lo: int, hi: int) -> pa.Table:
    """Rows lo..hi-1 of a Parquet file that has fewer row groups than ranks.

    A row group is decoded whole, so this rank must decode rows that are not its own: it does so
    one column at a time and copies its rows out, so that beyond its own rows it never holds more
    than one decoded column.
    """
    arrays = []
    for c in columns:
        whole = pf.read(columns=[c]).column(0)
        arrays.append(pa.concat_arrays(whole.slice(lo, hi - lo).chunks) if hi > lo else pa.array([], whole.type))
        del whole
        release_freed_memory()
    return pa.table(arrays, names=columns)
