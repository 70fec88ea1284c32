"""Ludwig's options beyond the basics: defaults, output decoders, loss options, balancing, column splits, L-BFGS.

Each option is checked under a real horovodrun -np 2 against one process (np=1): exactly equal where
Ludwig's semantics make it exact (row counts of balancing, the rows of each split, the gradient of
per-sample-mean losses), and by learning where they do not (class weights, confidence penalty).
"""
import json
import logging
import os
import sys

import numpy as np
import pytest

from conftest import WORKERS, launcher_command, require_horovod, run_job
from test_ludwig_examples import access_table, insurance_table, train, write_rows

from hvd_trainer.data.balance import balanced_total, shares
from hvd_trainer.errors import ConfigError
from hvd_trainer.feature_defaults import merge_sections
from hvd_trainer.model_config import ModelConfig


def run_worker(tmp_path, mode, scenarios, np_, launcher="gloo"):
    require_horovod()
    out = tmp_path / f"{mode}_np{np_}_{launcher}"
    out.mkdir()
    spec = tmp_path / f"{mode}_np{np_}_{launcher}.json"
    spec.write_text(json.dumps({"scenarios": scenarios}))
    prefix = launcher_command(launcher, np_) if np_ > 1 else [sys.executable]
    result = run_job(prefix + [os.path.join(WORKERS, "ludwig_option_checks.py"), mode, str(spec), str(out)],
                     timeout=240)
    assert result.returncode == 0, result.stdout[-5000:]
    return [json.load(open(out / f"rank{r}.json")) for r in range(np_)]


# ---- balancing and column splits: the same rows at np=2 as at np=1 -------------------------------------------
INSURANCE_INPUTS = [{"name": "Age", "type": "number"}, {"name": "Vehicle_Damage", "type": "category"},
                    {"name": "Previously_Insured", "type": "binary"}]


def insurance_config(**preprocessing):
    return {"input_features": INSURANCE_INPUTS, "output_features": [{"name": "Response", "type": "binary"}],
            "preprocessing": preprocessing}


@pytest.fixture(scope="module")
def data_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("data")
    insurance, _ = insurance_table(tmp_path / "insurance.csv", n=1200)
    access, _ = access_table(tmp_path / "access.csv", n=900)
    dated = _dated_table(tmp_path / "dated.csv")
    access_inputs = [{"name": "RESOURCE", "type": "category"}, {"name": "MGR_ID", "type": "category"}]
    scenarios = {
        "plain": {"config": insurance_config(), "dataset": insurance},
        "oversample": {"config": insurance_config(oversample_minority=0.26), "dataset": insurance},
        "oversample_full": {"config": insurance_config(oversample_minority=1.0), "dataset": insurance},
        "undersample": {"config": insurance_config(undersample_majority=0.5), "dataset": insurance},
        "stratify": {"config": insurance_config(split={"type": "stratify", "column": "Response",
                                                       "probabilities": [0.6, 0.2, 0.2]}), "dataset": insurance},
        "fixed": {"config": {"input_features": access_inputs, "output_features": [{"name": "ACTION", "type": "binary"}],
                             "preprocessing": {"split": {"type": "fixed"}}}, "dataset": access},
        "datetime": {"config": {"input_features": [{"name": "x", "type": "number"}],
                                "output_features": [{"name": "y", "type": "binary"}],
                                "preprocessing": {"split": {"type": "datetime", "column": "when"}}},
                     "dataset": dated},
    }
    two = run_worker(tmp_path, "data", scenarios, 2)
    one = run_worker(tmp_path, "data", scenarios, 1)[0]
    return one, two


def _dated_table(path, n=500, seed=3):
    rng = np.random.default_rng(seed)
    days = rng.permutation(n)  # every row its own day, in random file order
    when = [str(np.datetime64("2020-01-01") + int(d)) for d in days]
    columns = {"x": rng.normal(size=n).round(3).tolist(), "y": rng.integers(0, 2, n).tolist(), "when": when}
    return write_rows(path, columns, n)


def union(ranks, scenario, split):
    ids = []
    for r in ranks:
        ids += r[scenario]["ids"][split]
    return sorted(ids)


def target_counts(ranks, scenario):
    total = {}
    for r in ranks:
        for k, v in r[scenario]["training_target"].items():
            total[k] = total.get(k, 0) + v
    return total


@pytest.mark.parametrize("scenario,ratio", [("oversample", 0.26), ("oversample_full", 1.0)])
def test_oversampling_gives_ludwigs_row_count_at_np2_as_at_np1(data_runs, scenario, ratio):
    one, two = data_runs
    before = one["plain"]["training_target"]
    majority, minority = max(before.values()), min(before.values())
    minority_key = min(before, key=before.get)
    expected = balanced_total(majority, minority, ratio, None)
    assert expected == round(majority * ratio) and expected > minority
    for counts in (one[scenario]["training_target"], target_counts(two, scenario)):
        assert counts[minority_key] == expected
        assert sum(counts.values()) == majority + expected
    # The majority class keeps exactly its rows; validation and test are not resampled.
    assert union(two, scenario, "validation") == union([one], "plain", "validation")
    assert union(two, scenario, "test") == union([one], "plain", "test")


def test_undersampling_keeps_ludwigs_count_of_majority_rows_at_np2_as_at_np1(data_runs):
    one, two = data_runs
    before = one["plain"]["training_target"]
    majority_key = max(before, key=before.get)
    expected = int(min(before.values()) / 0.5)
    for counts in (one["undersample"]["training_target"], target_counts(two, "undersample")):
        assert counts[majority_key] == expected
    two_ids = union(two, "undersample", "training")
    assert len(two_ids) == len(set(two_ids)), "undersampling draws without replacement"


@pytest.mark.parametrize("scenario", ["stratify", "fixed", "datetime"])
def test_column_splits_put_the_same_rows_in_each_split_at_np2_as_at_np1(data_runs, scenario):
    one, two = data_runs
    for split in ("training", "validation", "test"):
        assert union(two, scenario, split) == union([one], scenario, split), split


def test_stratified_split_keeps_each_classes_share_in_every_split(data_runs):
    one, two = data_runs
    for ranks in ([one], two):
        per_split = {s: {} for s in ("training", "validation", "test")}
        for r in ranks:
            for s, counts in r["stratify"]["targets"].items():
                for k, v in counts.items():
                    per_split[s][k] = per_split[s].get(k, 0) + v
        for label in ("0.0", "1.0"):
            n = sum(per_split[s].get(label, 0) for s in per_split)
            for split, p in (("training", 0.6), ("validation", 0.2), ("test", 0.2)):
                assert abs(per_split[split].get(label, 0) - p * n) <= 1, (label, split, per_split)


def test_datetime_split_trains_on_the_oldest_rows(tmp_path, data_runs):
    one, _ = data_runs
    ids = one["datetime"]["ids"]
    assert len(ids["training"]) == int(0.7 * 500) and len(ids["validation"]) == int(0.1 * 500)
    days = np.random.default_rng(3).permutation(500)  # _dated_table's days, by row id
    assert max(days[ids["training"]]) < min(days[ids["validation"]]) <= max(days[ids["validation"]]) < min(
        days[ids["test"]])


# ---- decoders, losses and defaults: the gradient at np=2 is the gradient at np=1 ----------------------------
def exact_model_config():
    return {
        "input_features": [{"name": "RESOURCE", "type": "category"}, {"name": "MGR_ID", "type": "category"},
                           {"name": "ROLE_TITLE", "type": "category", "encoder": {"type": "dense", "embedding_size": 4}}],
        "output_features": [
            {"name": "ACTION", "type": "binary", "fc_layers": [{"output_size": 8}, {"output_size": 4, "activation": "tanh"}],
             "loss": {"positive_class_weight": 2.0, "robust_lambda": 0.2}},
        ],
        "defaults": {"category": {"encoder": {"type": "sparse"}}, "binary": {"decoder": {"fc_activation": "elu"}}},
        "combiner": {"num_fc_layers": 1, "output_size": 16},
        "preprocessing": {"split": {"type": "fixed"}},
    }


def test_output_fc_layers_positive_class_weight_robust_lambda_and_defaults_give_np1s_gradient_at_np2(tmp_path):
    dataset, _ = access_table(tmp_path / "access.csv", n=600)
    scenarios = {"model": {"config": exact_model_config(), "dataset": dataset}}
    two = run_worker(tmp_path, "grads", scenarios, 2)
    one = run_worker(tmp_path, "grads", scenarios, 1)[0]
    names = one["parameters"]
    assert any(n.startswith("decoder_fc.") for n in names), "the output's fc layers are in the model"
    assert two[0]["grad"] == two[1]["grad"]
    # 600 rows in halves of 300 (rows rank::2): the mean of the halves' mean losses is the mean loss.
    np.testing.assert_allclose(two[0]["grad"], one["grad"], rtol=1e-5, atol=1e-7)
    assert two[0]["loss"] == pytest.approx(one["loss"], rel=1e-6)


# ---- options whose np=2 result is not exact: they must still learn at np=2 -------------------------------------
def test_class_weights_confidence_penalty_and_batch_norm_decoders_learn_at_np2(tmp_path):
    dataset, labels = access_table(tmp_path / "access.csv", n=2000)
    config = {
        "input_features": [{"name": n, "type": "category"} for n in ("RESOURCE", "MGR_ID", "ROLE_TITLE")],
        "output_features": [
            {"name": "ACTION", "type": "binary", "weight_regularization": None,
             "decoder": {"num_fc_layers": 1, "fc_output_size": 16, "fc_norm": "batch", "fc_dropout": 0.1},
             "loss": {"confidence_penalty": 0.1}},
            {"name": "ROLE_CODE", "type": "category", "loss": {"class_weights": {"ROL0": 2.0}}},
        ],
        "defaults": {"category": {"encoder": {"type": "dense", "embedding_size": 8}}},
        "preprocessing": {"split": {"type": "fixed"}},
        "trainer": {"epochs": 8, "batch_size": 64, "learning_rate": 0.01},
    }
    config_path = tmp_path / "config.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(config))
    n_codes = len(set(_column(dataset, "ROLE_CODE")))
    config["output_features"][1]["loss"]["class_weights"] = {f"ROL{i}": (2.0 if i == 0 else 1.0) for i in range(n_codes)}
    config_path.write_text(yaml.safe_dump(config))
    progress, out = train(str(config_path), dataset, tmp_path / "runs2")
    assert "weight_regularization (at output_features[0].weight_regularization)" in out
    accuracy = progress["best_eval_test_metrics"]["ACTION"]["accuracy"]
    print(f"class weights, confidence penalty, batch-norm decoder at np=2: test accuracy {accuracy:.3f}")
    assert accuracy >= 0.5 + 0.2, accuracy  # balanced classes: chance is 0.5


def _column(path, name):
    import csv

    with open(path) as fh:
        return [row[name] for row in csv.DictReader(fh)]


def test_class_weights_must_name_the_vocabulary_and_weigh_the_loss():
    from hvd_trainer.models.feature_model import build_model
    import torch

    mc = ModelConfig.from_dict({"input_features": [{"name": "x", "type": "number"}],
                                "output_features": [{"name": "y", "type": "category",
                                                     "loss": {"class_weights": {"a": 3.0, "b": 1.0}}}]})
    meta = {"x": {"type": "number", "preprocessing": {"normalization": "zscore"}},
            "y": {"type": "category", "idx2str": ["<UNK>", "a", "b"], "vocab_size": 3,
                  "preprocessing": {"lowercase": False, "most_common": 10000}}}
    model = build_model(mc, meta)
    logits, target = torch.zeros(2, 3), torch.tensor([1, 2])
    # torch's (and Ludwig's) weighted mean: sum of w[y] * loss / sum of w[y]; equal losses -> log(3).
    assert float(model.output_features["y"].mean_loss(logits, target)) == pytest.approx(np.log(3))
    assert model.output_features["y"]._class_weights.tolist() == [1.0, 3.0, 1.0]
    for weights, message in (({"a": 1.0}, "gives no weight to 'b'"), ({"a": 1, "b": 1, "c": 1}, "names 'c'"),
                             ([1.0, 2.0], "has 2 weights, but the vocabulary has 3")):
        mc.output_features[0].loss.class_weights = weights
        with pytest.raises(ConfigError, match=message):
            build_model(mc, meta)


# ---- L-BFGS: np=2 == np=1 is tests/test_trainer.py::test_lbfgs_at_two_ranks_takes_the_full_batch_step_of_one_rank;
# Ludwig's lbfgs example at np=2 is in tests/test_ludwig_examples.py.


# ---- config: Ludwig's merge rule, deprecated keys, refusals (one process) ------------------------------------
def test_defaults_merge_like_ludwig_feature_keys_win_and_another_encoder_type_takes_nothing():
    default = {"encoder": {"type": "sparse", "dropout": 0.2}, "preprocessing": {"most_common": 5}}
    assert merge_sections(default, {"name": "a", "type": "category"}, ()) == {
        "encoder": {"type": "sparse", "dropout": 0.2}, "preprocessing": {"most_common": 5}, "name": "a",
        "type": "category"}
    merged = merge_sections(default, {"encoder": {"type": "dense", "embedding_size": 3}}, ())
    assert merged["encoder"] == {"type": "dense", "embedding_size": 3}
    merged = merge_sections(default, {"encoder": {"dropout": 0.0}, "preprocessing": {"lowercase": True}}, ())
    assert merged["encoder"] == {"type": "sparse", "dropout": 0.0}
    assert merged["preprocessing"] == {"most_common": 5, "lowercase": True}


def test_outputs_take_decoder_and_loss_defaults_and_inputs_take_preprocessing_and_encoder():
    mc = ModelConfig.from_dict({
        "input_features": [{"name": "c", "type": "category"}],
        "output_features": [{"name": "b", "type": "binary"}, {"name": "k", "type": "category"}],
        "defaults": {"category": {"encoder": {"type": "sparse"}, "preprocessing": {"most_common": 7},
                                  "loss": {"class_weights": [1, 2]}, "decoder": {"num_fc_layers": 2}},
                     "binary": {"loss": {"robust_lambda": 0.1}}, "text": {"encoder": {"type": "rnn"}}},
    })
    c, b, k = mc.input_features[0], mc.output_features[0], mc.output_features[1]
    assert c.encoder.type == "sparse" and c.preprocessing.most_common == 7
    assert b.loss.robust_lambda == 0.1
    assert k.loss.class_weights == [1, 2] and len(k.decoder.layer_specs()) == 2
    assert k.preprocessing.most_common == 10000, "outputs do not take preprocessing defaults (Ludwig's rule)"


def test_older_ludwigs_per_type_preprocessing_and_flat_decoder_keys_are_read():
    mc = ModelConfig.from_dict({
        "input_features": [{"name": "x", "type": "number"}],
        "output_features": [{"name": "y", "type": "binary", "num_fc_layers": 2, "output_size": 7, "dropout": 0.3,
                             "norm": "layer", "activation": "tanh"}],
        "preprocessing": {"number": {"normalization": "minmax"}, "stratify": "y"},
    })
    assert mc.input_features[0].preprocessing.normalization == "minmax"
    assert mc.preprocessing.split.type == "stratify" and mc.preprocessing.split.column == "y"
    specs = mc.output_features[0].decoder.layer_specs()
    assert [(s.output_size, s.dropout, s.norm, s.activation) for s in specs] == [(7, 0.3, "layer", "tanh")] * 2


def test_a_deprecated_key_is_accepted_with_one_warning_naming_every_place_and_the_replacement(caplog):
    with caplog.at_level(logging.WARNING):
        ModelConfig.from_dict({
            "input_features": [{"name": "x", "type": "number", "weight_regularization": None}],
            "output_features": [{"name": "y", "type": "binary", "weight_regularization": "l2",
                                 "decoder": {"weight_regularization": None}}],
            "combiner": {"weight_regularization": None},
        })
    warnings = [r.getMessage() for r in caplog.records if "weight_regularization" in r.getMessage()]
    assert len(warnings) == 1
    for where in ("input_features[0]", "output_features[0].weight_regularization", "output_features[0].decoder",
                  "combiner", "trainer.regularization_lambda"):
        assert where in warnings[0]


def test_category_loss_keys_ludwig_ignores_are_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        ModelConfig.from_dict({"input_features": [{"name": "x", "type": "number"}],
                               "output_features": [{"name": "y", "type": "category",
                                                    "loss": {"confidence_penalty": 0.1, "robust_lambda": 1}}]})
    assert "confidence_penalty" in caplog.text and "class_weights" in caplog.text


def test_a_typo_still_gets_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'weight'"):
        ModelConfig.from_dict({"input_features": [{"name": "x", "type": "number"}],
                               "output_features": [{"name": "y", "type": "binary", "loss": {"weigth": 2}}]})


def test_balancing_shares_are_dealt_by_largest_remainder_and_sum_to_the_total():
    assert shares(10, [1, 1, 1]) == [4, 3, 3]
    assert shares(7, [0, 5, 5]) == [0, 4, 3]
    assert sum(shares(1234, [17, 400, 3])) == 1234
    assert balanced_total(1000, 150, 0.26, None) == 260
    assert balanced_total(1000, 150, None, 0.5) == 300


# ---- the option examples under hvd_trainer/examples ------------------------------------------------------------
@pytest.mark.parametrize("name", ["access"] + sorted(__import__("hvd_trainer.examples", fromlist=["x"]).OPTION_EXAMPLES))
def test_each_option_example_loads_its_own_data_and_its_model_takes_a_step(tmp_path, name):
    import torch
    import yaml

    from hvd_trainer.data.pipeline import load_training_data
    from hvd_trainer.examples import example_config_path, write_example_dataset
    from hvd_trainer.job import JobConfig
    from hvd_trainer.models.feature_model import build_model

    job = JobConfig.load(example_config_path(name))
    with open(example_config_path(name)) as fh:
        assert yaml.safe_load(fh)["input_features"]
    data = write_example_dataset(name, str(tmp_path / f"{name}.csv"))
    train_set, _, test_set, metadata = load_training_data(job.model, dataset=data)
    assert len(train_set) and len(test_set)
    model = build_model(job.model, metadata)
    batch = train_set.take(np.arange(min(64, len(train_set))))
    loss, _ = model.train_loss(model.target_tensors(batch, "cpu"), model(model.input_tensors(batch, "cpu")))
    loss.backward()
    assert torch.isfinite(loss)


def test_a_lone_last_training_row_joins_the_batch_before_it():
    from hvd_trainer.data import Dataset

    ds = Dataset({"x": np.arange(33, dtype=np.float32)})
    batcher = ds.initialize_batcher(16, training=True)
    assert batcher.steps_per_epoch == 2  # 16 + 17: batch norm never sees a one-row batch
    sizes, seen = [], []
    while not batcher.last_batch():
        rows = batcher.next_batch()["x"]
        sizes.append(len(rows))
        seen.extend(rows.tolist())
    assert sizes == [16, 17] and sorted(seen) == list(range(33)), "no row of the epoch is lost"
    assert ds.initialize_batcher(16, training=False).steps_per_epoch == 3  # evaluation: batches as they come
    assert ds.initialize_batcher(32, training=True).steps_per_epoch == 1
    assert Dataset({"x": np.arange(1, dtype=np.float32)}).initialize_batcher(16).steps_per_epoch == 1
    assert Dataset({"x": np.arange(1, dtype=np.float32)}).initialize_batcher(16).steps_per_epoch == 1
