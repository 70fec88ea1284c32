"""Data pipeline: readers, splits, metadata, transforms, bad input; sharded loads under horovodrun."""
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WORKERS, launcher_command, require_horovod, run_job
from hvd_trainer.data.pipeline import ROW_ID, check_enough_rows, load_inference_data, load_training_data
from hvd_trainer.data.preprocessing import decode_predictions, load_metadata, save_metadata
from hvd_trainer.data.readers import read_table
from hvd_trainer.data.split import random_split
from hvd_trainer.errors import ConfigError, DataError
from hvd_trainer.examples import write_example_dataset
from hvd_trainer.model_config import ModelConfig

COLUMNS = ["num", "num2", "const", "cat", "bin", "label", "score"]


# ---- test data ------------------------------------------------------------------------------------
def sample_rows(n=240, seed=0):
    """Columns with missing values; numbers are multiples of 1/8, so sums are exact in any order."""
    rng = np.random.default_rng(seed)

    def maybe(values, p):
        return [None if rng.random() < p else v for v in values]

    return {
        "num": maybe([float(v) / 4 for v in rng.integers(-40, 40, n)], 0.1),
        "num2": maybe([float(v) / 8 for v in rng.integers(0, 100, n)], 0.1),
        "const": [5.0] * n,
        "cat": maybe(rng.choice(["red", "green", "blue", "violet"], n, p=[0.5, 0.3, 0.15, 0.05]).tolist(), 0.05),
        "bin": maybe(rng.choice(["yes", "no"], n).tolist(), 0.05),
        "label": maybe(rng.choice(["a", "b", "c"], n).tolist(), 0.03),
        "score": [float(v) / 2 for v in rng.integers(0, 50, n)],
    }


def config(**preprocessing):
    return {
        "input_features": [
            {"name": "num", "type": "number"},
            {"name": "num2", "type": "number",
             "preprocessing": {"normalization": "minmax", "missing_value_strategy": "fill_with_mean"}},
            {"name": "const", "type": "number"},
            {"name": "cat", "type": "category", "preprocessing": {"most_common": 3}},
            {"name": "bin", "type": "binary"},
        ],
        "output_features": [{"name": "label", "type": "category"},
                            {"name": "score", "type": "number", "preprocessing": {"normalization": "zscore"}}],
        "preprocessing": preprocessing,
    }


def cell(v):
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def write_csv(path, rows, order=None):
    order = order or list(rows)
    n = len(rows[order[0]])
    lines = [",".join(order)] + [",".join(cell(rows[c][i]) for c in order) for i in range(n)]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return str(path)


def write_parquet(path, rows, row_group_size=None):
    pq.write_table(pa.table(rows), str(path), row_group_size=row_group_size)
    return str(path)


def model_config(**preprocessing):
    return ModelConfig.from_dict(config(**preprocessing))


@pytest.fixture
def csv_path(tmp_path):
    return write_csv(tmp_path / "data.csv", sample_rows())


def load(path, mc=None, **kwargs):
    return load_training_data(mc or model_config(), dataset=path, **kwargs)


def by_row(ds):
    """{row id: {column: value}} of a dataset."""
    ids = ds.columns[ROW_ID]
    return {int(r): {k: v[i].item() for k, v in ds.columns.items() if k != ROW_ID} for i, r in enumerate(ids)}


def simple_config(inputs, outputs=({"name": "y", "type": "number"},), **preprocessing):
    return ModelConfig.from_dict({"input_features": list(inputs), "output_features": list(outputs),
                                  "preprocessing": preprocessing or {"split": {"probabilities": [1.0, 0.0, 0.0]}}})


# ---- formats and metadata ---------------------------------------------------------------------------------
def test_csv_and_parquet_give_the_same_datasets_and_metadata(tmp_path):
    rows = sample_rows()
    from_csv = load(write_csv(tmp_path / "d.csv", rows))
    from_parquet = load(write_parquet(tmp_path / "d.parquet", rows, row_group_size=50))
    assert from_csv[3] == from_parquet[3]
    for a, b in zip(from_csv[:3], from_parquet[:3]):
        assert by_row(a) == by_row(b)
        assert not a.sharded


def test_number_metadata_is_computed_over_the_training_rows_after_filling(csv_path):
    train, _, _, meta = load(csv_path)
    rows = sample_rows()
    ids = train.columns[ROW_ID]
    num = np.array([rows["num"][i] if rows["num"][i] is not None else 0.0 for i in ids])  # fill_with_const 0
    assert meta["num"]["mean"] == pytest.approx(num.mean(), rel=1e-12)
    assert meta["num"]["std"] == pytest.approx(num.std(ddof=1), rel=1e-12)
    assert (meta["num"]["min"], meta["num"]["max"]) == (num.min(), num.max())
    np.testing.assert_allclose(train.columns["num"], (num - num.mean()) / num.std(ddof=1), rtol=1e-5, atol=1e-6)
    present = np.array([rows["num2"][i] for i in ids if rows["num2"][i] is not None])
    assert meta["num2"]["preprocessing"]["computed_fill_value"] == pytest.approx(present.mean())
    assert train.columns["num2"].min() >= 0 and train.columns["num2"].max() == pytest.approx(1.0)
    assert train.columns["num"].dtype == np.float32 and train.columns["cat"].dtype == np.int64


def test_category_vocabulary_is_ranked_by_frequency_with_unk_first(csv_path):
    train, _, _, meta = load(csv_path)
    cat = meta["cat"]
    assert cat["idx2str"] == ["<UNK>", "red", "green", "blue"]  # most_common 3: violet maps to <UNK>
    assert cat["str2idx"] == {s: i for i, s in enumerate(cat["idx2str"])} and cat["vocab_size"] == 4
    rows = sample_rows()
    for r, values in by_row(train).items():
        expected = rows["cat"][r] if rows["cat"][r] in ("red", "green", "blue") else "<UNK>"
        assert cat["idx2str"][values["cat"]] == expected
    assert sum(cat["str2freq"].values()) == len(train)


def test_binary_strings_map_to_zero_and_one(tmp_path):
    rows = {"b": ["Yes", "no", "TRUE", "false", "1", "0", None], "y": [1.0] * 7}
    mc = simple_config([{"name": "b", "type": "binary", "preprocessing": {"missing_value_strategy": "fill_with_true"}}])
    train, _, _, meta = load_training_data(mc, dataset=write_csv(tmp_path / "b.csv", rows))
    assert train.columns["b"].tolist() == [1, 0, 1, 0, 1, 0, 1]
    assert meta["b"]["str2bool"]["Yes"] is True and meta["b"]["preprocessing"]["computed_fill_value"] is True


def test_binary_labels_use_fallback_true_label_and_integers_in_parquet_work(tmp_path):
    rows = {"b": ["benign", "malignant", "benign"], "i": [1, 0, 1], "y": [1.0, 2.0, 3.0]}
    mc = simple_config([{"name": "b", "type": "binary", "preprocessing": {"fallback_true_label": "benign"}},
                        {"name": "i", "type": "binary"}])
    train, _, _, meta = load_training_data(mc, dataset=write_parquet(tmp_path / "b.parquet", rows))
    assert train.columns["b"].tolist() == [1, 0, 1] and train.columns["i"].tolist() == [1, 0, 1]
    assert meta["b"]["bool2str"] == ["malignant", "benign"]


def test_constant_column_normalizes_to_zero_without_nan(tmp_path):
    rows = {"z": [0.0] * 6, "m": [7.5] * 6, "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
    mc = simple_config([{"name": "z", "type": "number"},
                        {"name": "m", "type": "number", "preprocessing": {"normalization": "minmax"}}])
    train, _, _, meta = load_training_data(mc, dataset=write_csv(tmp_path / "c.csv", rows))
    assert meta["z"]["std"] == 0.0 and meta["m"]["max"] == meta["m"]["min"]
    assert train.columns["z"].tolist() == [0.0] * 6 and train.columns["m"].tolist() == [0.0] * 6


def test_digits_example_with_all_zero_pixels_loads_without_nan(tmp_path):
    import yaml

    from hvd_trainer.examples import example_config_path

    path = write_example_dataset("digits", tmp_path / "digits.parquet")
    mc = ModelConfig.from_dict(yaml.safe_load(open(example_config_path("digits"))))
    train, val, test, meta = load_training_data(mc, dataset=path)
    assert meta["pixel_0"]["std"] == 0.0  # the corner pixel is 0 in every image
    assert len(train) + len(val) + len(test) == 1797
    assert all(np.isfinite(v).all() for k, v in train.columns.items())
    assert meta["label"]["vocab_size"] == 11


@pytest.mark.parametrize("name, n_inputs, target", [("breast_cancer", 30, "diagnosis"), ("diabetes", 10, "target")])
def test_other_examples_write_their_columns(tmp_path, name, n_inputs, target):
    table = pq.read_table(write_example_dataset(name, tmp_path / f"{name}.pq"))
    assert table.num_columns == n_inputs + 1 and table.column_names[-1] == target


def test_missing_values_are_filled_or_dropped(tmp_path):
    rows = {"a": [1.0, None, 3.0, 4.0], "c": ["x", "y", None, "y"], "k": [None, 2.0, 2.0, 8.0],
            "d": [1.0, 2.0, 3.0, None], "y": [1.0, 2.0, 3.0, 4.0]}
    mc = simple_config([
        {"name": "a", "type": "number", "preprocessing": {"missing_value_strategy": "fill_with_mean", "normalization": None}},
        {"name": "c", "type": "category", "preprocessing": {"missing_value_strategy": "fill_with_mode"}},
        {"name": "k", "type": "number", "preprocessing": {"missing_value_strategy": "fill_with_const", "fill_value": -1,
                                                          "normalization": None}},
        {"name": "d", "type": "number", "preprocessing": {"missing_value_strategy": "drop_row"}},
    ])
    train, _, _, meta = load_training_data(mc, dataset=write_csv(tmp_path / "m.csv", rows))
    assert train.columns[ROW_ID].tolist() == [0, 1, 2]  # row 3 had no d
    assert train.columns["a"].tolist() == [1.0, 2.0, 3.0]  # mean of the kept rows' values 1 and 3
    # The mode of the kept rows: x and y once each; ties go to the first value in sort order.
    assert [meta["c"]["idx2str"][i] for i in train.columns["c"]] == ["x", "y", "x"]
    assert train.columns["k"].tolist() == [-1.0, 2.0, 2.0]


def test_number_mode_and_category_constant_fill(tmp_path):
    rows = {"a": [2.0, 2.0, 5.0, None], "c": ["p", None, "p", "q"], "y": [1.0, 2.0, 3.0, 4.0]}
    mc = simple_config([
        {"name": "a", "type": "number", "preprocessing": {"missing_value_strategy": "fill_with_mode", "normalization": None}},
        {"name": "c", "type": "category", "preprocessing": {"fill_value": "missing"}},
    ])
    train, _, _, meta = load_training_data(mc, dataset=write_csv(tmp_path / "m.csv", rows))
    assert train.columns["a"].tolist() == [2.0, 2.0, 5.0, 2.0]
    assert [meta["c"]["idx2str"][i] for i in train.columns["c"]] == ["p", "missing", "p", "q"]


def test_lowercase_merges_categories(tmp_path):
    rows = {"c": ["Red", "red", "RED ", "blue"], "y": [1.0, 2.0, 3.0, 4.0]}
    mc = simple_config([{"name": "c", "type": "category", "preprocessing": {"lowercase": True}}])
    _, _, _, meta = load_training_data(mc, dataset=write_csv(tmp_path / "l.csv", rows))
    assert meta["c"]["idx2str"] == ["<UNK>", "red", "blue"]


# ---- splits and shards ---------------------------------------------------------------------------------------
def test_random_split_follows_the_probabilities_and_the_seed():
    ids = np.arange(20000)
    codes = random_split(ids, (0.7, 0.1, 0.2), seed=1)
    shares = np.bincount(codes, minlength=3) / len(ids)
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.015)
    assert (random_split(ids, (0.7, 0.1, 0.2), seed=1) == codes).all()
    assert (random_split(ids, (0.7, 0.1, 0.2), seed=2) != codes).mean() > 0.3
    assert (random_split(ids, (0.8, 0.0, 0.2), seed=1) != 1).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet_groups", "parquet_one_group"])
@pytest.mark.parametrize("size", [2, 3, 5])
def test_shards_are_disjoint_cover_the_file_and_keep_each_rows_split(tmp_path, fmt, size):
    rows = sample_rows(n=61)
    path = (write_csv(tmp_path / "d.csv", rows) if fmt == "csv" else
            write_parquet(tmp_path / "d.parquet", rows, row_group_size=10 if fmt == "parquet_groups" else None))
    whole = read_table(path, {"num": "x", "cat": "y"})
    shards = [read_table(path, {"num": "x", "cat": "y"}, rank=r, size=size) for r in range(size)]
    offset = 0
    for i, shard in enumerate(shards):
        if shard.row_ids is None:  # CSV shards learn their offset from the ranks before them
            shards[i] = shard = shard.with_row_offset(offset)
        offset += shard.num_rows
        assert shard.num_rows > 0
    ids = np.concatenate([s.row_ids for s in shards])
    assert sorted(ids.tolist()) == list(range(61))
    for s in shards:
        assert s.columns["cat"].to_pylist() == [rows["cat"][i] for i in s.row_ids]
    whole_codes = dict(zip(whole.row_ids.tolist(), random_split(whole.row_ids, (0.6, 0.2, 0.2), 7).tolist()))
    for s in shards:
        assert random_split(s.row_ids, (0.6, 0.2, 0.2), 7).tolist() == [whole_codes[i] for i in s.row_ids.tolist()]


def test_csv_shards_cut_at_line_starts_even_with_more_ranks_than_lines(tmp_path):
    path = write_csv(tmp_path / "tiny.csv", {"num": [1.0, 2.0], "cat": ["a", "b"]})
    shards = [read_table(path, {"num": "x"}, rank=r, size=4) for r in range(4)]
    assert sum(s.num_rows for s in shards) == 2
    assert [v for s in shards for v in s.columns["num"].to_pylist()] == ["1.0", "2.0"]


def test_fixed_split_uses_the_split_column(tmp_path):
    rows = sample_rows(n=30)
    rows["fold"] = [i % 3 for i in range(30)]
    train, val, test, _ = load(write_csv(tmp_path / "f.csv", rows), model_config(split={"type": "fixed", "column": "fold"}))
    for ds, code in ((train, 0), (val, 1), (test, 2)):
        assert all(r % 3 == code for r in ds.columns[ROW_ID])
    kept = {i for i in range(30) if rows["label"][i] is not None}
    assert set(np.concatenate([d.columns[ROW_ID] for d in (train, val, test)]).tolist()) == kept


def test_sample_ratio_keeps_about_that_share_of_rows(tmp_path):
    path = write_csv(tmp_path / "s.csv", sample_rows(n=1000))
    full = sum(len(d) for d in load(path)[:3])
    half = sum(len(d) for d in load(path, model_config(sample_ratio=0.5))[:3])
    assert 0.4 * full < half < 0.6 * full


def test_separate_files_and_unseen_test_category_maps_to_unk(tmp_path, caplog):
    rows = sample_rows(n=100)
    test_rows = sample_rows(n=20, seed=3)
    test_rows["cat"] = ["purple"] * 20
    train, val, test, meta = load_training_data(
        model_config(), training_set=write_csv(tmp_path / "train.csv", rows),
        test_set=write_parquet(tmp_path / "test.parquet", test_rows))
    assert val is None and len(train) == sum(1 for v in rows["label"] if v is not None)
    assert "purple" not in meta["cat"]["str2idx"]
    assert test.columns["cat"].tolist() == [0] * len(test)  # <UNK>


def test_saved_metadata_round_trips_and_is_applied_without_recomputing(tmp_path, csv_path):
    _, _, _, meta = load(csv_path)
    path = save_metadata(meta, str(tmp_path / "model"))
    assert path.endswith("model/training_set_metadata.json")
    loaded = load_metadata(str(tmp_path / "model"))
    assert loaded == json.loads(json.dumps(meta))
    other = sample_rows(seed=9)
    other_path = write_csv(tmp_path / "other.csv", other)
    train, _, _, reused = load(other_path, metadata=loaded)
    assert reused is loaded
    r, values = next(iter(by_row(train).items()))
    num = other["num"][r] if other["num"][r] is not None else 0.0
    assert values["num"] == pytest.approx((num - loaded["num"]["mean"]) / loaded["num"]["std"], rel=1e-5)


def test_inference_data_keeps_row_ids_and_needs_no_target_columns(tmp_path, csv_path):
    _, _, _, meta = load(csv_path)
    rows = sample_rows(n=12, seed=4)
    del rows["label"], rows["score"]
    ds = load_inference_data(model_config(), meta, write_parquet(tmp_path / "new.parquet", rows), include_targets=False)
    assert ds.columns[ROW_ID].tolist() == list(range(12))
    assert set(ds.columns) == {"num", "num2", "const", "cat", "bin", ROW_ID}


def test_inference_split_selects_the_rows_training_used_for_that_split(csv_path):
    _, _, test, meta = load(csv_path, random_seed=5)
    ds = load_inference_data(model_config(), meta, csv_path, split="test", random_seed=5)
    assert by_row(ds) == by_row(test)


def test_predictions_decode_to_labels_and_original_scale(csv_path):
    _, _, _, meta = load(csv_path)
    assert decode_predictions(meta["label"], np.array([1, 0])).tolist() == [meta["label"]["idx2str"][1], "<UNK>"]
    assert decode_predictions(meta["bin"], np.array([True, False])).tolist() == ["yes", "no"]
    assert decode_predictions(meta["score"], np.array([0.0, 1.0])).tolist() == pytest.approx(
        [meta["score"]["mean"], meta["score"]["mean"] + meta["score"]["std"]])


def test_check_enough_rows_accepts_one_batch_per_rank():
    check_enough_rows(128, 2, 64)
    check_enough_rows(2, 2, "auto")


def test_a_batch_size_covering_the_whole_training_set_is_full_batch_training_at_any_rank_count():
    check_enough_rows(32769, 2, 32769)  # Ludwig's lbfgs example: "entire training set"
    check_enough_rows(100, 4, 1000)
    with pytest.raises(DataError, match="fewer than the 4 ranks"):
        check_enough_rows(3, 4, 1000)


# ---- bad input, one process ----------------------------------------------------------------------------------
def bad_file(tmp_path, name, content):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return str(path)


def csv_with(tmp_path, column, index, value, n=20):
    rows = sample_rows(n=n)
    rows[column] = list(rows[column])
    rows[column][index] = value
    return write_csv(tmp_path / "bad.csv", rows)


BAD_DATA = {
    "missing path": (lambda t: str(t / "nope.csv"), {}, ["does not exist", "nope.csv"]),
    "directory": (lambda t: str(t), {}, ["is a directory"]),
    "unsupported extension": (lambda t: bad_file(t, "d.json", "{}"), {}, ["'.json'", "CSV", "Parquet"]),
    "compressed csv": (lambda t: bad_file(t, "d.csv.gz", "x"), {}, ["'.gz'", "Decompress"]),
    "empty file": (lambda t: bad_file(t, "e.csv", ""), {}, ["is empty", "header"]),
    "header only": (lambda t: bad_file(t, "h.csv", ",".join(COLUMNS) + "\n"), {}, ["no data rows"]),
    "ragged row": (lambda t: bad_file(t, "r.csv", ",".join(COLUMNS) + "\n1,2,5,red,yes,a,1\n1,2,5,red,yes,a,1,9\n"),
                   {}, ["could not be parsed as CSV", "Expected 7 columns, got 8"]),
    "not utf-8": (lambda t: bad_file(t, "u.csv", (",".join(COLUMNS) + "\n1,2,5,r\xe9d,yes,a,1\n").encode("latin-1")),
                  {}, ["could not be parsed as CSV", "UTF"]),
    "corrupt parquet": (lambda t: bad_file(t, "c.parquet", b"PAR1 this is not parquet"), {}, ["could not be read as Parquet"]),
    "missing column": (lambda t: write_csv(t / "m.csv", {k: v for k, v in sample_rows(10).items() if k != "num2"} |
                                           {"num_2": [1.0] * 10}),
                       {}, ["no column 'num2'", "number feature 'num2'", "Did you mean 'num_2'"]),
    "text in a number column": (lambda t: csv_with(t, "num", 17, "twelve"), {},
                                ["column 'num'", "'twelve'", "row 17", "not a number"]),
    "infinite number": (lambda t: csv_with(t, "num2", 3, "inf"), {}, ["column 'num2'", "inf", "row 3", "infinite"]),
    "bad fixed split value": (lambda t: write_csv(t / "f.csv", sample_rows(10) | {"split": [0, 1, 2, 0, 7, 0, 1, 2, 0, 0]}),
                              {"split": {"type": "fixed"}}, ["split column 'split'", "7", "row 4", "0 (training)"]),
    "missing split column": (lambda t: write_csv(t / "f.csv", sample_rows(10)), {"split": {"type": "fixed"}},
                             ["no column 'split'", "fixed split"]),
    "three binary values": (lambda t: csv_with(t, "bin", 2, "maybe"), {"split": {"probabilities": [1.0, 0.0, 0.0]}}, ["binary", "'bin'", "'maybe'", "fallback_true_label"]),
    "nothing left after drop_row": (lambda t: write_csv(t / "d.csv", sample_rows(10) | {"label": [None] * 10}), {},
                                    ["training set is empty", "drop_row"]),
    "all values missing for a mean": (lambda t: write_csv(t / "d.csv", sample_rows(10) | {"num2": [None] * 10}), {},
                                      ["'num2'", "no values", "fill_with_mean"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_refused_with_a_message_naming_cause_and_fix(tmp_path, case):
    make, preprocessing, expected = BAD_DATA[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        load(path, model_config(**preprocessing))
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert "\n" not in message


def test_dataset_and_training_set_together_are_refused(csv_path):
    with pytest.raises(ConfigError, match="either --dataset"):
        load_training_data(model_config(), dataset=csv_path, training_set=csv_path)
    with pytest.raises(ConfigError, match="No training data"):
        load_training_data(model_config())


def test_metadata_from_another_config_is_refused(csv_path):
    _, _, _, meta = load(csv_path)
    del meta["cat"]
    with pytest.raises(DataError, match="'cat' is missing in the saved training set metadata"):
        load_inference_data(model_config(), meta, csv_path)
    _, _, _, meta = load(csv_path)
    other = config()
    other["input_features"][0]["preprocessing"] = {"normalization": "minmax"}
    with pytest.raises(DataError, match="normalization 'minmax' in the config but 'zscore'"):
        load_inference_data(ModelConfig.from_dict(other), meta, csv_path)


def test_missing_or_damaged_metadata_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="no training set metadata"):
        load_metadata(str(tmp_path))
    bad_file(tmp_path, "training_set_metadata.json", "{not json")
    with pytest.raises(DataError, match="damaged"):
        load_metadata(str(tmp_path))
    bad_file(tmp_path, "training_set_metadata.json", "{}")
    with pytest.raises(DataError, match="not training set metadata written by this version"):
        load_metadata(str(tmp_path))


def test_unseen_binary_value_at_inference_is_refused_with_its_row(tmp_path, csv_path):
    _, _, _, meta = load(csv_path)
    rows = sample_rows(n=5, seed=2)
    rows["bin"] = ["yes", "no", "perhaps", "yes", "no"]
    with pytest.raises(DataError, match="'perhaps' in row 2"):
        load_inference_data(model_config(), meta, write_csv(tmp_path / "p.csv", rows))


def test_too_few_rows_for_ranks_times_batch_size_is_refused():
    with pytest.raises(DataError, match="100 rows, but 4 ranks x batch size 64 need at least 256.*25 or less"):
        check_enough_rows(100, 4, 64)
    with pytest.raises(DataError, match="fewer than the 4 ranks"):
        check_enough_rows(3, 4, "auto")


# ---- sharded loads under horovodrun ---------------------------------------------------------------------------
SOURCES = ["csv", "parquet_groups", "parquet_one_group", "separate_files"]


def write_sources(tmp_path):
    rows = sample_rows(n=240)
    data = tmp_path / "data"
    data.mkdir()
    csv = write_csv(data / "d.csv", rows)
    return {
        "csv": {"dataset": csv},
        "parquet_groups": {"dataset": write_parquet(data / "g.parquet", rows, row_group_size=25)},
        "parquet_one_group": {"dataset": write_parquet(data / "o.parquet", rows)},
        "separate_files": {"training_set": csv, "test_set": write_parquet(data / "t.parquet", sample_rows(40, seed=1),
                                                                          row_group_size=7)},
    }


def _run_worker(tmp_path, launcher, mode, spec, timeout=120):
    require_horovod()
    out = tmp_path / f"out_{mode}"
    out.mkdir()
    spec_path = tmp_path / f"spec_{mode}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = launcher_command(launcher, 2) + [os.path.join(WORKERS, "data_checks.py"), mode, str(spec_path), str(out)]
    start = time.time()
    result = run_job(cmd, timeout=timeout)
    return result, out, time.time() - start


@pytest.fixture(scope="module", params=["gloo", "horovodrun-mpi"])
def sharded_load(request, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(request.param)
    sources = write_sources(tmp_path)
    result, out, _ = _run_worker(tmp_path, request.param, "load", {"config": config(), "sources": sources})
    assert result.returncode == 0, result.stdout[-4000:]
    ranks = [json.load(open(out / f"rank{r}.json")) for r in range(2)]
    return sources, ranks, out


def assert_same_json(a, b, path="metadata"):
    """Equal structure and values; floats equal up to summation order (1e-12 relative)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same_json(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.horovod
@pytest.mark.parametrize("source", SOURCES)
def test_sharded_metadata_equals_the_one_process_metadata(sharded_load, source):
    sources, ranks, out = sharded_load
    _, _, _, reference = load_training_data(model_config(), **sources[source])
    written = json.load(open(out / source / "training_set_metadata.json"))
    assert_same_json(written, json.loads(json.dumps(reference)))
    for r in ranks:
        assert r["sources"][source]["metadata"] == ranks[0]["sources"][source]["metadata"]  # same on every rank
    assert written["__hvd_trainer__"]["training_rows"] == reference["__hvd_trainer__"]["training_rows"]


@pytest.mark.horovod
@pytest.mark.parametrize("source", SOURCES)
def test_rank_shards_are_disjoint_and_together_the_whole_split(sharded_load, source):
    sources, ranks, _ = sharded_load
    reference = dict(zip(("training", "validation", "test"), load_training_data(model_config(), **sources[source])[:3]))
    for split, ref in reference.items():
        if ref is None:
            assert all(r["sources"][source][split] is None for r in ranks)
            continue
        shards = [r["sources"][source][split] for r in ranks]
        ids = [set(s["row_ids"]) for s in shards]
        assert all(s["sharded"] for s in shards) and all(ids)
        assert not ids[0] & ids[1]
        assert ids[0] | ids[1] == set(ref.columns[ROW_ID].tolist())
        expected = by_row(ref)
        for s in shards:
            for i, row in enumerate(s["row_ids"]):
                for name, values in s["columns"].items():
                    assert values[i] == pytest.approx(expected[row][name], rel=1e-6, abs=1e-6), (split, row, name)


def bad_scenarios(tmp_path):
    """Each bad value sits in the last rows of its file: rank 1's shard, never rank 0's."""
    d = tmp_path / "bad"
    d.mkdir()
    n = 60

    def rows_with(column, value, seed=0):
        rows = sample_rows(n=n, seed=seed)
        rows[column] = list(rows[column])
        rows[column][n - 2] = value
        return rows

    text_number = write_csv(d / "text_number.csv", rows_with("num", "lots"))
    ragged = write_csv(d / "ragged.csv", sample_rows(n=n))
    with open(ragged, "a") as fh:
        fh.write("1.0,2.0,5.0,red,yes,a,1.0,surplus\n")
    as_strings = {k: [None if v is None else str(v) for v in vals] for k, vals in rows_with("num2", "n/a?").items()}
    string_parquet = write_parquet(d / "strings.parquet", as_strings, row_group_size=10)
    split_rows = sample_rows(n=n)
    split_rows["fold"] = [0] * (n - 1) + [9]
    bad_split = write_csv(d / "split.csv", split_rows)
    good = write_csv(d / "good.csv", sample_rows(n=n))
    odd_validation = write_csv(d / "val.csv", rows_with("bin", "perhaps", seed=2))
    scenarios = {
        "text in a number column": ({"dataset": text_number}, config(), ["column 'num'", "'lots'", f"row {n - 2}"]),
        "ragged csv line": ({"dataset": ragged}, config(), ["could not be parsed as CSV", "rank 1 of 2"]),
        "text in a parquet number column": ({"dataset": string_parquet}, config(),
                                            ["column 'num2'", "'n/a?'", f"row {n - 2}"]),
        "bad fixed split value": ({"dataset": bad_split}, config(split={"type": "fixed", "column": "fold"}),
                                  ["split column 'fold'", "9", f"row {n - 1}"]),
        "unseen binary value in validation": ({"training_set": good, "validation_set": odd_validation}, config(),
                                              ["'perhaps'", f"row {n - 2}"]),
    }
    # The premise of the test: rank 0's shard of each file never holds the bad row.
    for path, bad_row in ((text_number, n - 2), (string_parquet, n - 2), (bad_split, n - 1), (odd_validation, n - 2)):
        rank0 = read_table(path, {"num": "x"}, rank=0, size=2)
        rank0 = rank0 if rank0.row_ids is not None else rank0.with_row_offset(0)
        assert bad_row not in rank0.row_ids.tolist()
    return scenarios, good


@pytest.mark.horovod
def test_bad_value_in_one_ranks_shard_is_raised_alike_on_every_rank(tmp_path):
    scenarios, good = bad_scenarios(tmp_path)
    spec = {"config": config(), "good": {"dataset": good},
            "scenarios": {name: {"kwargs": kw, "config": cfg} for name, (kw, cfg, _) in scenarios.items()}}
    result, out, _ = _run_worker(tmp_path, "gloo", "bad", spec)
    assert result.returncode == 0, result.stdout[-4000:]
    ranks = [json.load(open(out / f"rank{r}.json")) for r in range(2)]
    for name, (_, _, expected) in scenarios.items():
        errors = [r["errors"][name] for r in ranks]
        assert errors[0] is not None, name
        assert errors[0] == errors[1], name  # same type and message on both ranks
        for part in expected:
            assert part in errors[0][1], f"{name}: {part!r} not in {errors[0][1]}"
    assert all(r["good_rows"] > 0 for r in ranks)


@pytest.mark.horovod
def test_an_uncaught_bad_value_in_one_shard_ends_the_whole_job_non_zero(tmp_path):
    rows = sample_rows(n=60)
    rows["num"] = list(rows["num"])
    rows["num"][58] = "lots"
    path = write_csv(tmp_path / "bad.csv", rows)
    spec = {"uncaught": {"config": config(), "kwargs": {"dataset": path}}}
    result, out, elapsed = _run_worker(tmp_path, "gloo", "uncaught", spec, timeout=90)
    assert result.returncode != 0
    messages = [json.load(open(out / f"rank{r}.json"))["error"] for r in range(2)]
    assert messages[0] == messages[1] and "'lots'" in messages[0] and "row 58" in messages[0]
    assert "Traceback" in result.stdout and "DataError" in result.stdout
