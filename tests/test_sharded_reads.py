"""Each rank of a sharded Parquet read fetches only its own row groups from the file (real horovodrun -np 2)."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WORKERS, launcher_command, require_horovod, run_job

ROWS, GROUP_ROWS = 16000, 2000  # 8 row groups of ~30 KB, dealt round-robin: rank 0 gets 0, 2, 4, 6


def write_file(path):
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=ROWS), "b": rng.normal(size=ROWS).astype(np.float32),
                      "y": [f"c{i % 3}" for i in range(ROWS)], "unused": rng.normal(size=ROWS)})
    pq.write_table(table, path, row_group_size=GROUP_ROWS)
    return path


def group_byte_ranges(path):
    """[start, end) in the file of each row group's column chunks."""
    meta = pq.ParquetFile(path).metadata
    ranges = []
    for g in range(meta.num_row_groups):
        chunks = [meta.row_group(g).column(c) for c in range(meta.num_columns)]
        starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in chunks]
        ends = [s + c.total_compressed_size for s, c in zip(starts, chunks)]
        ranges.append((min(starts), max(ends)))
    return ranges


def overlaps(read, span):
    start, n = read
    return start < span[1] and span[0] < start + n


@pytest.mark.horovod
def test_each_rank_reads_only_its_own_row_groups(tmp_path):
    require_horovod()
    path = write_file(str(tmp_path / "t.parquet"))
    ranges = group_byte_ranges(path)
    size = os.path.getsize(path)
    assert len(ranges) == ROWS // GROUP_ROWS
    out = tmp_path / "out"
    out.mkdir()
    result = run_job(launcher_command("gloo", 2) + [os.path.join(WORKERS, "read_checks.py"), path, str(out)],
                     timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
    for rank in range(2):
        record = json.load(open(out / f"rank{rank}.json"))
        mine = [g for g in range(len(ranges)) if g % 2 == rank]
        others = [g for g in range(len(ranges)) if g % 2 != rank]
        # pyarrow first reads the file's tail (up to 64 KiB) for the footer, whatever it holds:
        # every other read must stay inside this rank's own row groups.
        data_reads = [r for r in record["reads"] if r[1] > 0 and r[0] + r[1] != size]
        for g in others:
            assert not any(overlaps(r, ranges[g]) for r in data_reads), (rank, g, record["reads"])
        for g in mine:
            assert any(overlaps(r, ranges[g]) for r in data_reads), (rank, g, record["reads"])
        expected = [i for g in mine for i in range(g * GROUP_ROWS, (g + 1) * GROUP_ROWS)]
        assert sorted(record["row_ids"]) == expected
