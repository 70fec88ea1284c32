"""What the data path holds in memory: Parquet read one row group at a time, and the number and
binary inputs built once, as the row-major block the model takes, never also as separate columns."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hvd_trainer.data.dataset import Dataset
from hvd_trainer.data.dense_block import CHUNK_ROWS, DenseBlockBuilder, block_of
from hvd_trainer.data.pipeline import load_training_data
from hvd_trainer.data.readers import read_table
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.models.feature_model import DENSE_BLOCK, build_model


# ---- the Parquet reader ------------------------------------------------------------------------------
def mixed_table(n=1000, seed=0):
    """Integer and float columns with and without nulls, float32, strings and booleans."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(n) < 0.1
    return pa.table({
        "f64": rng.normal(size=n),
        "f32": rng.normal(size=n).astype(np.float32),
        "f64_nulls": pa.array(rng.normal(size=n), mask=nulls),
        "i64_nulls": pa.array(rng.integers(-5, 5, n), mask=nulls),
        "i16": pa.array(rng.integers(-5, 5, n).astype(np.int16)),
        "s": pa.array([None if m else f"v{i % 7}" for i, m in enumerate(nulls)]),
        "b": pa.array(rng.random(n) < 0.5),
    })


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_parquet_read_by_row_groups_equals_pyarrows_own_read(tmp_path, size):
    table = mixed_table()
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path, row_group_size=90)  # 12 row groups, the last one short
    columns = {c: "a test" for c in table.column_names}
    for rank in range(size):
        raw = read_table(path, columns, rank, size)
        expected = table.take(pa.array(raw.row_ids))
        assert raw.num_rows == len(raw.row_ids) == expected.num_rows
        for c in table.column_names:
            got = raw.columns[c]
            assert got.type == table.schema.field(c).type, c
            assert got.null_count == expected.column(c).null_count, c
            assert got.equals(expected.column(c).combine_chunks()), c
    if size > 1:
        ids = np.concatenate([read_table(path, columns, r, size).row_ids for r in range(size)])
        assert sorted(ids.tolist()) == list(range(table.num_rows))


def test_row_groups_whose_columns_come_in_several_chunks_keep_every_row():
    """pyarrow may hand a large row group's column over in several chunks: each lands at its own rows."""
    from hvd_trainer.data.readers import _read_row_groups

    groups = [pa.table({"x": pa.chunked_array([[1.0, 2.0], [None, 4.0, 5.0]]),
                        "s": pa.chunked_array([["a"], ["b", None, "d", "e"]])}),
              pa.table({"x": pa.chunked_array([[6.0], [7.0]]), "s": pa.chunked_array([["f", "g"]])})]

    class TwoGroups:  # the part of pyarrow's ParquetFile that the reader uses
        schema_arrow = groups[0].schema

        def read_row_group(self, g, columns):
            return groups[g].select(columns)

    cols = _read_row_groups(TwoGroups(), [0, 1], ["x", "s"], 7)
    assert cols["x"].to_pylist() == [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0]
    assert cols["s"].to_pylist() == ["a", "b", None, "d", "e", "f", "g"]


# ---- the dense block --------------------------------------------------------------------------------
def test_the_builder_returns_the_columns_as_views_of_one_row_major_block():
    rows = CHUNK_ROWS * 2 + 123  # whole chunks and a partial one
    rng = np.random.default_rng(0)
    columns = {n: rng.normal(size=rows).astype(np.float32) for n in ("a", "b", "c")}
    builder = DenseBlockBuilder(["a", "b", "c"], rows)
    for name in ("c", "a", "b"):  # any order of arrival; the block keeps the builder's order
        assert builder.accepts(columns[name])
        builder.put(name, columns[name])
    out = builder.build()
    block = block_of([out["a"], out["b"], out["c"]])
    assert block is not None and block.shape == (rows, 3) and block.flags.c_contiguous
    np.testing.assert_array_equal(block, np.stack([columns["a"], columns["b"], columns["c"]], axis=1))
    assert block_of([out["b"], out["a"], out["c"]]) is None  # not the block's order
    assert not builder.accepts(columns["a"].astype(np.float64))
    assert not builder.accepts(columns["a"][1:])


def _peak_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM")
def test_building_the_block_holds_the_rows_about_once():
    rows, k = 200_000, 64  # 49 MB of float32
    builder = DenseBlockBuilder([f"x{i}" for i in range(k)], rows)
    column = np.arange(rows, dtype=np.float32)
    for i in range(k):
        builder.put(f"x{i}", column + i)
    del column
    _reset_peak()
    before = _peak_mb()
    out = builder.build()
    grown = _peak_mb() - before
    size_mb = rows * k * 4 / 2**20
    # The staging area is handed back as the block fills: copying without that would hold both (+1 x).
    assert grown < 0.4 * size_mb, (grown, size_mb)
    assert out["x5"][7] == 12.0


def test_stacked_gives_the_block_itself_and_copies_other_columns():
    block = np.empty((10, 3), dtype=np.float32)  # a block of its own (as the builder's), not a view
    block[:] = np.arange(30).reshape(10, 3)
    ds = Dataset({"a": block[:, 0], "b": block[:, 1], "c": block[:, 2], "y": np.zeros(10)})
    assert ds.stacked("blk", ["a", "b", "c"]).columns["blk"] is block
    loose = Dataset({"a": np.ones(10, np.float32), "b": np.zeros(10, np.float32), "y": np.zeros(10)})
    stacked = loose.stacked("blk", ["b", "a"]).columns["blk"]
    np.testing.assert_array_equal(stacked, np.stack([np.zeros(10), np.ones(10)], axis=1))


def test_loaded_number_and_binary_inputs_are_the_models_block_without_a_copy(tmp_path):
    rng = np.random.default_rng(1)
    n = 500
    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.table({"n1": rng.normal(size=n), "c": rng.choice(["p", "q"], n),
                             "bin": rng.choice(["yes", "no"], n), "n2": rng.normal(size=n).astype(np.float32),
                             "y": rng.choice(["a", "b"], n)}), path, row_group_size=64)
    mc = ModelConfig.from_dict({
        "input_features": [{"name": "n1", "type": "number"}, {"name": "c", "type": "category"},
                           {"name": "bin", "type": "binary"}, {"name": "n2", "type": "number"}],
        "output_features": [{"name": "y", "type": "category"}]})
    train, validation, test, metadata = load_training_data(mc, dataset=path)
    model = build_model(mc, metadata)
    for ds in (train, validation, test):
        block = block_of([ds.columns[name] for name in ("n1", "bin", "n2")])
        assert block is not None
        assert model.prepare_dataset(ds).columns[DENSE_BLOCK] is block
        assert ds.columns["c"].dtype != np.float32  # not a dense input: a column of its own
