"""Set, text, vector and date features under horovodrun -np 2: each rank reads only its half of the
file, yet the vocabularies and sizes (training set metadata) equal those of one process, exactly,
and the transformed rows are the same. The data is built so that a vocabulary of either half alone
would differ from the whole file's. And a model with every new encoder and output, trained at np=2
with batch b, ends with the weights of one process trained with batch 2b."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from conftest import WORKERS, launcher_command, require_horovod, run_job
from workers.feature_training_checks import train_once

from hvd_trainer.data.pipeline import ROW_ID, load_training_data
from hvd_trainer.distributed import LocalStrategy
from hvd_trainer.model_config import ModelConfig

N = 240  # rows; each rank reads about half of the file


def config():
    return {
        "input_features": [
            {"name": "genres", "type": "set", "preprocessing": {"tokenizer": "comma", "most_common": 3}},
            {"name": "review", "type": "text", "preprocessing": {"most_common": 5, "lowercase": True}},
            {"name": "emb", "type": "vector", "preprocessing": {"missing_value_strategy": "fill_with_mode"}},
            {"name": "day", "type": "date", "preprocessing": {"datetime_format": "%d.%m.%Y", "fill_value": "1.1.2000"}},
            {"name": "x", "type": "number"},
        ],
        "output_features": [
            {"name": "tags", "type": "set", "preprocessing": {"most_common": 4}},
            {"name": "target", "type": "vector"},
        ],
    }


def rows(n=N, seed=0):
    """The first half and the second half have different frequent tokens, and the longest text,
    the most frequent vector and the rarest tags sit in the second half only."""
    rng = np.random.default_rng(seed)
    first = np.arange(n) < n // 2
    genres = np.where(first, rng.choice(["a, b", "a", "c, b", "a, c"], n), rng.choice(["d", "d, c", "d, c"], n))
    words = np.where(first, rng.choice(["good film", "good plot!", "fine cast"], n),
                     rng.choice(["Bad film", "bad bad script", "dull, long and bad film with a plot twist"], n))
    emb = np.where(first, rng.choice(["1 2 3", "4 5 6", "7 8 9"], n), "0 0 1")
    emb[rng.random(n) < 0.1] = ""  # missing: the mode over the whole file is "0 0 1"
    tags = np.where(first, rng.choice(["x", "x y", "y z"], n), rng.choice(["w", "w v", "v u", "t"], n))
    days = [f"{d}.{m}.{y}"
            for d, m, y in zip(rng.integers(1, 29, n), rng.integers(1, 13, n), rng.integers(1990, 2030, n))]
    day = np.array(days, dtype=object)
    day[rng.random(n) < 0.05] = ""
    return {
        "genres": genres.astype(object), "review": words.astype(object), "emb": emb.astype(object), "day": day,
        "x": rng.normal(size=n), "tags": tags.astype(object),
        "target": np.array([f"{a:.3f} {b:.3f}" for a, b in rng.normal(size=(n, 2))], dtype=object),
    }


def write(path, columns):
    table = pa.table({k: pa.array([None if v == "" else v for v in c.tolist()]) for k, c in columns.items()})
    pacsv.write_csv(table, str(path))
    return str(path)


def run_worker(tmp_path, launcher, mode, spec):
    require_horovod()
    out = tmp_path / f"out_{mode}"
    out.mkdir()
    spec_path = tmp_path / f"spec_{mode}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = launcher_command(launcher, 2) + [os.path.join(WORKERS, "data_checks.py"), mode, str(spec_path), str(out)]
    result = run_job(cmd, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:]
    return [json.load(open(out / f"rank{r}.json")) for r in range(2)], out


@pytest.fixture(scope="module", params=["gloo", "horovodrun-mpi"])
def sharded(request, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(request.param)
    path = write(tmp_path / "d.csv", rows())
    spec = {"config": config(), "sources": {"csv": {"dataset": path}}}
    ranks, out = run_worker(tmp_path, request.param, "load", spec)
    return path, ranks, out


@pytest.mark.horovod
def test_vocabularies_and_sizes_at_np2_equal_one_process_exactly(sharded):
    path, ranks, out = sharded
    _, _, _, reference = load_training_data(ModelConfig.from_dict(config()), dataset=path)
    written = json.load(open(out / "csv" / "training_set_metadata.json"))
    assert written == json.loads(json.dumps(reference))
    assert all(r["sources"]["csv"]["metadata"] == written for r in ranks)
    assert written["genres"]["idx2str"] == ["<UNK>", "c", "d", "a"]
    assert written["review"]["max_sequence_length"] == 12  # the longest review's 10 tokens, <SOS>, <EOS>
    assert written["emb"]["preprocessing"]["computed_fill_value"] == "0.0 0.0 1.0"


@pytest.mark.horovod
def test_the_ranks_rows_together_are_the_one_process_rows(sharded):
    path, ranks, _ = sharded
    train, _, _, _ = load_training_data(ModelConfig.from_dict(config()), dataset=path)
    by_row = {}
    for r in ranks:
        shard = r["sources"]["csv"]["training"]
        assert shard["sharded"]
        for i, row_id in enumerate(shard["row_ids"]):
            by_row[row_id] = {k: v[i] for k, v in shard["columns"].items()}
    assert sorted(by_row) == sorted(train.columns[ROW_ID].tolist())
    for i, row_id in enumerate(train.columns[ROW_ID].tolist()):
        for name in ("genres", "review", "emb", "day", "tags", "target"):
            assert by_row[row_id][name] == train.columns[name][i].tolist(), (name, row_id)


def test_either_half_alone_would_build_other_vocabularies(tmp_path):
    """What the test above guards against: a vocabulary per shard differs from the whole file's."""
    columns = rows()
    mc = ModelConfig.from_dict(config())
    whole = load_training_data(mc, dataset=write(tmp_path / "all.csv", columns))[3]
    for half in (slice(0, N // 2), slice(N // 2, N)):
        part = load_training_data(mc, dataset=write(tmp_path / "half.csv", {k: v[half] for k, v in columns.items()}))[3]
        assert part["genres"]["idx2str"] != whole["genres"]["idx2str"]
        assert part["review"]["idx2str"] != whole["review"]["idx2str"]
        assert part["tags"]["idx2str"] != whole["tags"]["idx2str"]


@pytest.mark.horovod
def test_vectors_of_another_size_on_one_rank_are_refused_on_both(tmp_path):
    columns = rows()
    columns["emb"] = np.where(np.arange(N) < N // 2, "1 2 3", "1 2 3 4").astype(object)
    bad_path = write(tmp_path / "bad.csv", columns)
    good_path = write(tmp_path / "good.csv", rows())
    spec = {"config": config(), "good": {"dataset": good_path},
            "scenarios": {"sizes": {"config": config(), "kwargs": {"dataset": bad_path}}}}
    ranks, _ = run_worker(tmp_path, "gloo", "bad", spec)
    errors = [r["errors"]["sizes"] for r in ranks]
    assert errors[0] == errors[1] and errors[0][0] == "DataError"
    assert "has rows of 3 to 4 numbers in the training set" in errors[0][1]
    assert all(r["good_rows"] > 0 for r in ranks)


def training_config():
    """Every new encoder and output, no dropout or batch norm: np=2 x b must equal np=1 x 2b."""
    return {
        "input_features": [
            {"name": "genres", "type": "set", "preprocessing": {"tokenizer": "comma"},
             "encoder": {"embedding_size": 4, "num_fc_layers": 1, "output_size": 4}},
            {"name": "review", "type": "text", "encoder": {"type": "parallel_cnn", "embedding_size": 4,
                                                           "num_filters": 3, "fc_layers": [{"output_size": 4}]}},
            {"name": "review2", "column": "review", "type": "text",
             "encoder": {"type": "rnn", "cell_type": "gru", "embedding_size": 4, "state_size": 3}},
            {"name": "emb", "type": "vector", "preprocessing": {"missing_value_strategy": "fill_with_mode"},
             "encoder": {"output_size": 4}},
            {"name": "day", "type": "date", "preprocessing": {"datetime_format": "%d.%m.%Y", "fill_value": "1.1.2000"},
             "encoder": {"type": "embed", "embedding_size": 2}},
            {"name": "day2", "column": "day", "type": "date", "preprocessing": {"datetime_format": "%d.%m.%Y",
                                                                              "fill_value": "1.1.2000"},
             "encoder": {"type": "wave"}},
        ],
        "output_features": [{"name": "tags", "type": "set"}, {"name": "target", "type": "vector"}],
        "preprocessing": {"split": {"type": "random", "probabilities": [1.0, 0.0, 0.0]}},
    }


@pytest.mark.horovod
def test_training_every_new_encoder_at_np2_with_batch_b_equals_np1_with_batch_2b(tmp_path):
    require_horovod()
    spec = {"config": training_config(), "dataset": write(tmp_path / "d.csv", rows(n=160)), "batch_size": 8}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    out.mkdir()
    cmd = launcher_command("gloo", 2) + [os.path.join(WORKERS, "feature_training_checks.py"), str(spec_path), str(out)]
    result = run_job(cmd, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:]
    ranks = [json.load(open(out / f"rank{r}.json"))["params"] for r in range(2)]
    assert ranks[0] == ranks[1]
    initial, one = train_once({**spec, "batch_size": 16}, LocalStrategy(), str(tmp_path / "np1"))
    assert not np.allclose(initial, one, rtol=1e-4, atol=1e-6)  # training moved the weights
    assert np.allclose(ranks[0], one, rtol=1e-4, atol=1e-6)
