"""The trainer: real horovodrun -np 2 runs for everything multi-process, in-process for np=1."""
import glob
import json
import math
import os

import pytest
import torch

from conftest import WORKERS, launcher_command, require_horovod, run_job
from workers.synthetic import LBFGS_FULL_BATCH, classification_columns, datasets, flat_params, mlp_model

from hvd_trainer.data import Dataset
from hvd_trainer.distributed import LocalStrategy
from hvd_trainer.trainer import Trainer


@pytest.fixture(scope="module", params=["gloo", "mpirun"])
def ranks(request, tmp_path_factory):
    require_horovod()
    out = tmp_path_factory.mktemp(f"trainer_{request.param}")
    cmd = launcher_command(request.param, 2) + [os.path.join(WORKERS, "trainer_checks.py"), str(out)]
    result = run_job(cmd, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:]
    return [json.load(open(out / f"rank{r}.json")) for r in range(2)]


def test_converges_to_stated_accuracy_with_bit_identical_weights(ranks):
    assert ranks[0]["test_accuracy"] >= 0.9
    assert ranks[0]["final_params"] == ranks[1]["final_params"]


def test_validation_metrics_cover_every_ranks_shard(ranks):
    for r in ranks:
        assert r["val_accuracy_synced"] == pytest.approx(r["val_accuracy_whole_set"], abs=1e-12)


def test_two_ranks_with_batch_b_equal_one_rank_with_batch_2b(ranks):
    t = Trainer({"epochs": 1, "batch_size": 16, "learning_rate": 0.05, "learning_rate_scaling": "constant",
                 "optimizer": {"type": "sgd"}, "gradient_clipping": {"clipglobalnorm": None}, "skip_all_evaluation": True},
                mlp_model(seed=3), distributed=LocalStrategy(), random_seed=11,
                skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    t.train(Dataset(classification_columns(160, 5), name="eq"), save_path="/tmp/hvd_trainer_eq_np1")
    assert ranks[0]["equivalence_params"] == ranks[1]["equivalence_params"]
    assert ranks[0]["equivalence_params"] == pytest.approx(flat_params(t.model), abs=1e-5)


def test_early_stop_asked_by_one_rank_stops_all_at_the_same_step(ranks):
    # steps_per_checkpoint 5; rank 1 asks at its 2nd evaluation -> both stop at step 10.
    assert ranks[0]["early_stop_steps"] == ranks[1]["early_stop_steps"] == 10


def test_nan_on_one_rank_stops_every_rank_with_a_clear_message(ranks):
    for r in ranks:
        assert r["nan_error"] is not None
        assert "NaN or infinite at step 8" in r["nan_error"] and "learning_rate" in r["nan_error"]
    assert ranks[0]["nan_error"] == ranks[1]["nan_error"]


def test_control_agreements_follow_the_slowest_rank_at_the_same_steps(ranks):
    # Rank 1 sleeps 10 ms per step; agreements are meant ~50 ms apart, so after the first two
    # (the second is the first with a measured step time) they come at most 5 steps apart.
    steps = ranks[0]["control_steps"]
    assert steps == ranks[1]["control_steps"]
    assert steps[:2] == [0, 4]
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps and max(gaps) <= 5, steps
    assert steps[-1] == ranks[0]["control_total_steps"] - 1  # the step before the end


def test_callbacks_run_on_the_coordinator_unless_they_ask_for_every_rank(ranks):
    rank0, rank1 = ranks[0]["hook_counts"], ranks[1]["hook_counts"]
    assert rank0["on_batch_end"] > 0 and rank0["on_epoch_end"] == 2 and rank0["on_eval_end"] == 2
    assert rank1["on_batch_end"] == rank1["on_epoch_end"] == rank1["on_eval_end"] == 0
    assert rank0["on_trainer_train_setup"] == rank1["on_trainer_train_setup"] == 1, "setup runs on every rank"
    assert rank0["should_early_stop"] == rank1["should_early_stop"] == 2, "the early-stop vote runs on every rank"
    assert ranks[0]["hook_counts_every_rank"] == ranks[1]["hook_counts_every_rank"] == rank0


def test_lbfgs_at_two_ranks_takes_the_full_batch_step_of_one_rank(ranks):
    t = Trainer(LBFGS_FULL_BATCH, mlp_model(seed=3), distributed=LocalStrategy(), random_seed=11,
                skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    t.train(Dataset(classification_columns(160, 5), name="eq"), save_path="/tmp/hvd_trainer_lbfgs_np1")
    assert ranks[0]["lbfgs_params"] == ranks[1]["lbfgs_params"]
    # 80 rows per rank: the average of the two halves' mean losses is the mean loss of all 160 rows.
    assert ranks[0]["lbfgs_params"] == pytest.approx(flat_params(t.model), abs=1e-4)
    assert ranks[0]["lbfgs_params"] != pytest.approx(flat_params(mlp_model(seed=3)), abs=1e-3), "it trained"


def test_remote_trainer_returns_only_on_rank0(ranks):
    assert ranks[0]["remote_result_is_none"] is False
    assert ranks[1]["remote_result_is_none"] is True


def test_batch_size_tuning_agrees_on_every_rank_and_leaves_no_trace(ranks):
    assert ranks[0]["tuned_batch_size"] == ranks[1]["tuned_batch_size"]
    assert 1 <= ranks[0]["tuned_batch_size"] <= 48  # capped at 20% of the 240 rows per rank
    for r in ranks:
        assert r["tuner_restored_weights"] and r["tuner_optimizer_state_empty"]


# ---- one process -----------------------------------------------------------------------------

def _local_trainer(config, **kwargs):
    kwargs.setdefault("skip_save_log", True)
    return Trainer(config, kwargs.pop("model", None) or mlp_model(seed=3), distributed=LocalStrategy(), **kwargs)


def test_gradient_accumulation_equals_one_bigger_batch(tmp_path):
    base = {"epochs": 1, "learning_rate": 0.05, "optimizer": {"type": "sgd"}, "skip_all_evaluation": True,
            "gradient_clipping": {"clipglobalnorm": None}}
    data = Dataset(classification_columns(96, 9), name="acc")
    big = _local_trainer({**base, "batch_size": 12}, random_seed=3, skip_save_model=True, skip_save_progress=True)
    big.train(data, save_path=str(tmp_path / "big"))
    acc = _local_trainer({**base, "batch_size": 4, "gradient_accumulation_steps": 3}, random_seed=3,
                         skip_save_model=True, skip_save_progress=True)
    acc.train(data, save_path=str(tmp_path / "acc"))
    assert flat_params(acc.model) == pytest.approx(flat_params(big.model), abs=1e-6)


def test_tensorboard_event_files_hold_the_seed_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val, test = datasets(n_train=64, n_val=32, n_test=32)
    t = Trainer({"epochs": 2, "batch_size": 16}, mlp_model(), distributed=LocalStrategy())
    t.train(train, val, test, save_path=str(tmp_path))
    tags = {}
    for split in ("training", "validation", "test"):
        acc = EventAccumulator(os.path.join(tmp_path, "logs", split))
        acc.Reload()
        tags[split] = set(acc.Tags()["scalars"])
    assert {"combined/step_training_loss", "y/step_training_loss", "combined/step_learning_rate",
            "y/epoch_loss", "y/epoch_accuracy", "combined/epoch_loss"} <= tags["training"]
    assert {"y/epoch_loss", "y/epoch_accuracy", "y/epoch_hits_at_k"} <= tags["validation"]
    assert {"y/epoch_accuracy"} <= tags["test"]
    steps = [e.step for e in EventAccumulator(os.path.join(tmp_path, "logs", "training")).Reload().Scalars("combined/step_training_loss")]
    assert steps == list(range(1, 9))


def test_output_files_are_written(tmp_path):
    train, val, _ = datasets(n_train=64, n_val=32)
    Trainer({"epochs": 2, "batch_size": 16}, mlp_model(), distributed=LocalStrategy()).train(train, val, save_path=str(tmp_path))
    for name in ("training_progress.json", "model_weights", "training_checkpoints/latest.ckpt",
                 "training_checkpoints/best.ckpt"):
        assert os.path.exists(tmp_path / name), name
    assert glob.glob(str(tmp_path / "logs" / "training" / "events.out.tfevents.*"))
    progress = json.load(open(tmp_path / "training_progress.json"))
    assert progress["steps"] == 8 and progress["epoch"] == 2 and progress["checkpoint_number"] == 2


def _grads_after_clipping(clipping):
    t = _local_trainer({"batch_size": 8, "gradient_clipping": clipping})
    model = t.model
    x = torch.randn(8, 10) * 100
    loss, _ = model.train_loss({"y": torch.zeros(8, dtype=torch.long)}, model({"x": x}))
    loss.backward()
    params = [p for p in model.parameters()]
    t.clip_grads(params)
    return params


@pytest.mark.parametrize("clipping,check", [
    ({"clipglobalnorm": 0.5}, lambda ps: torch.nn.utils.get_total_norm([p.grad for p in ps]) <= 0.5 + 1e-5),
    ({"clipglobalnorm": None, "clipnorm": 0.25}, lambda ps: torch.nn.utils.get_total_norm([p.grad for p in ps]) <= 0.25 + 1e-5),
    ({"clipglobalnorm": None, "clipvalue": 0.01}, lambda ps: max(p.grad.abs().max() for p in ps) <= 0.01 + 1e-9),
], ids=["clipglobalnorm", "clipnorm", "clipvalue"])
def test_each_clipping_bounds_the_gradients(clipping, check):
    assert check(_grads_after_clipping(clipping))


def test_without_clipping_the_gradients_exceed_the_bounds():
    ps = _grads_after_clipping({"clipglobalnorm": None})
    assert torch.nn.utils.get_total_norm([p.grad for p in ps]) > 0.5


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "lbfgs", "adagrad", "adadelta", "adamax", "nadam", "rmsprop"])
def test_every_optimizer_trains(tmp_path, optimizer):
    train, val, _ = datasets(n_train=128, n_val=32)
    extra = {"sgd": {"momentum": 0.9, "nesterov": True}, "lbfgs": {"line_search_fn": "strong_wolfe"}}.get(optimizer, {})
    lr = {"adadelta": 5.0, "lbfgs": 0.1}.get(optimizer, 0.05)
    model = mlp_model(seed=3)
    with torch.no_grad():
        before = float(model.eval_loss({"y": torch.as_tensor(train.columns["y"])}, model({"x": torch.as_tensor(train.columns["x"])}))[0])
    t = _local_trainer({"epochs": 6, "batch_size": 32, "learning_rate": lr, "optimizer": {"type": optimizer, **extra}}, model=model)
    _, tr, _, _ = t.train(train, val, save_path=str(tmp_path))
    assert tr["combined"]["loss"][-1][2] < 0.8 * before, (before, tr["combined"]["loss"])


@pytest.mark.parametrize("kind", ["l1", "l2", "l1_l2"])
def test_regularization_adds_its_penalty(kind):
    model = mlp_model()
    targets, outputs = {"y": torch.zeros(4, dtype=torch.long)}, model({"x": torch.ones(4, 10)})
    plain, _ = model.train_loss(targets, outputs)
    reg, _ = model.train_loss(targets, outputs, kind, 0.1)
    params = list(model.parameters())
    penalty = {"l1": sum(p.abs().sum() for p in params), "l2": sum((p * p).sum() for p in params)}
    penalty["l1_l2"] = penalty["l1"] + penalty["l2"]
    assert float(reg - plain) == pytest.approx(float(0.1 * penalty[kind]), rel=1e-5)


def test_mixed_precision_on_cpu_autocasts_to_bf16_with_a_grad_scaler_in_the_checkpoint(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU path")
    from hvd_trainer.checkpoint import load_checkpoint_file

    train, val, _ = datasets(n_train=128, n_val=32)
    t = _local_trainer({"epochs": 3, "batch_size": 16, "learning_rate": 0.01, "use_mixed_precision": True})
    assert t.step_fn.precision.dtype == torch.bfloat16 and t.scaler is not None
    _, train_metrics, _, _ = t.train(train, val, save_path=str(tmp_path))
    losses = [v for _, _, v in train_metrics["combined"]["loss"]]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    state = load_checkpoint_file(str(tmp_path / "training_checkpoints" / "latest.ckpt"))
    assert state["scaler"]["scale"] == t.scaler.get_scale()


def test_lr_is_scaled_by_world_size():
    from hvd_trainer.distributed.base import scaled_learning_rate

    assert scaled_learning_rate(0.1, "linear", 8) == pytest.approx(0.8)
    assert scaled_learning_rate(0.1, "sqrt", 4) == pytest.approx(0.2)
    assert scaled_learning_rate(0.1, "constant", 8) == pytest.approx(0.1)


def test_trainer_follows_warmup_then_linear_decay(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, _, _ = datasets(n_train=160)
    t = Trainer({"epochs": 2, "batch_size": 16, "learning_rate": 0.1, "skip_all_evaluation": True,
                 "learning_rate_scheduler": {"warmup_fraction": 0.25, "decay": "linear"}}, mlp_model(), distributed=LocalStrategy())
    t.train(train, save_path=str(tmp_path))
    acc = EventAccumulator(os.path.join(tmp_path, "logs", "training")).Reload()
    lrs = [e.value for e in acc.Scalars("combined/step_learning_rate")]
    # 20 steps, 5 of warmup; the value logged at step k is the LR set for the next step (k).
    expected = [0.1 * (k + 1) / 5 if k < 5 else 0.1 * max(0.0, (20 - k) / 15) for k in range(1, 21)]
    assert lrs == pytest.approx(expected, abs=1e-7)


def _saturating(b):
    """A cost curve with a knee: throughput b / (1 + b / 64) gains < 5% per doubling past 1024."""
    return False, b / (1 + b / 64)


def test_tuner_finds_the_knee_of_a_throughput_curve():
    from hvd_trainer.batch_size_tuner import select_best_batch_size

    best, trials = select_best_batch_size(10**6, _saturating)
    assert best == 1024
    assert [b for b, _ in trials] == [2 ** i for i in range(13)]  # two doublings past the knee, then stop


def test_tuner_respects_the_cap_and_stops_at_out_of_memory():
    from hvd_trainer.batch_size_tuner import select_best_batch_size

    assert select_best_batch_size(256, _saturating)[0] == 256
    oom_at_512 = lambda b: (True, 0.0) if b >= 512 else _saturating(b)  # noqa: E731
    assert select_best_batch_size(10**6, oom_at_512)[0] == 256


def test_tuner_forgives_one_noisy_trial():
    from hvd_trainer.batch_size_tuner import select_best_batch_size

    noisy = {1: 10, 2: 20, 4: 15, 8: 60, 16: 61, 32: 62}
    assert select_best_batch_size(32, lambda b: (False, noisy[b]))[0] == 8


def test_auto_batch_size_is_tuned_and_recorded_in_progress(tmp_path):
    train, val, _ = datasets(n_train=320, n_val=32)
    t = Trainer({"epochs": 1, "batch_size": "auto", "eval_batch_size": "auto"}, mlp_model(), distributed=LocalStrategy(),
                skip_save_log=True)
    t.train(train, val, save_path=str(tmp_path))
    progress = json.load(open(tmp_path / "training_progress.json"))
    assert progress["batch_size"] == t.batch_size and 1 <= t.batch_size <= 64
    assert t.eval_batch_size >= 1


def test_compile_trains_and_checkpoints_the_uncompiled_weights(tmp_path):
    from hvd_trainer.checkpoint import load_checkpoint_file

    train, val, _ = datasets(n_train=128, n_val=32)
    t = Trainer({"epochs": 2, "batch_size": 32, "compile": True}, mlp_model(), distributed=LocalStrategy(), skip_save_log=True)
    t.train(train, val, save_path=str(tmp_path))
    assert t.compiled_model is not t.model
    saved = load_checkpoint_file(str(tmp_path / "training_checkpoints" / "latest.ckpt"))["model"]
    assert set(saved) == set(t.model.state_dict())  # no _orig_mod. prefix: loadable without compile


def test_batch_size_grows_on_a_plateau_and_the_epochs_still_count(tmp_path):
    train, val, _ = datasets(n_train=128, n_val=32)
    # learning_rate tiny: the training loss cannot improve, so the plateau rule fires.
    t = Trainer({"epochs": 4, "batch_size": 16, "learning_rate": 1e-12, "early_stop": -1,
                 "increase_batch_size_on_plateau": 2, "increase_batch_size_on_plateau_patience": 1,
                 "increase_batch_size_on_plateau_max": 64}, mlp_model(), distributed=LocalStrategy(), skip_save_log=True)
    t.train(train, val, save_path=str(tmp_path))
    pt = t.last_progress_tracker
    assert pt.num_increases_batch_size == 2 and pt.batch_size == 64
    assert pt.epoch == 4
    # epochs 1-2 at batch 16 (the first evaluation only sets the best), then 32, then 64
    assert pt.steps == 8 + 8 + 4 + 2
    assert pt.checkpoint_to_step == {"1": 8, "2": 16, "3": 20, "4": 22}


def test_event_files_are_closed_when_the_setup_callback_fails(tmp_path, monkeypatch):
    from hvd_trainer.callbacks import Callback
    from hvd_trainer.event_file import EventFile

    closed = []
    close = EventFile.close
    monkeypatch.setattr(EventFile, "close", lambda self: (closed.append(self.path), close(self)))

    class FailingSetup(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator):
            raise RuntimeError("setup failed")

    train, val, _ = datasets(n_train=64, n_val=32)
    t = Trainer({"epochs": 1, "batch_size": 16}, mlp_model(), distributed=LocalStrategy(), callbacks=[FailingSetup()])
    with pytest.raises(RuntimeError, match="setup failed"):
        t.train(train, val, save_path=str(tmp_path))
    assert len(closed) == 3, "training, validation and test event files"


def test_per_step_hooks_go_only_to_callbacks_that_define_them():
    from hvd_trainer.callbacks import Callback, overriding

    class EpochOnly(Callback):
        def on_epoch_end(self, trainer, progress_tracker, save_path):
            pass

    class PerStep(Callback):
        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
            pass

    class DuckTyped:  # not a Callback subclass: always called
        def on_batch_start(self, trainer, progress_tracker, save_path):
            pass

        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
            pass

    cbs = [EpochOnly(), PerStep(), DuckTyped()]
    assert overriding(cbs, "on_batch_end") == cbs[1:]
    assert overriding(cbs, "on_batch_start") == cbs[2:]


@pytest.mark.parametrize("config, accumulated", [
    ({}, True),
    ({"evaluate_training_set": True}, False),
    ({"skip_all_evaluation": True}, False),
])
def test_training_metrics_are_accumulated_only_when_an_evaluation_reads_them(tmp_path, config, accumulated):
    model = mlp_model()
    calls, in_step = [], []  # update_metrics calls made by training steps (evaluations make others)
    update = model.update_metrics
    model.update_metrics = lambda *a, **k: (calls.extend(in_step), update(*a, **k))
    train, val, _ = datasets(n_train=64)
    t = Trainer({"epochs": 1, "batch_size": 16, **config}, model, distributed=LocalStrategy(), skip_save_log=True)
    train_step = t.train_step

    def marked_step(*a, **k):
        in_step.append(1)
        try:
            return train_step(*a, **k)
        finally:
            in_step.clear()

    t.train_step = marked_step
    _, train_metrics, _, _ = t.train(train, val, save_path=str(tmp_path))
    assert len(calls) == (4 if accumulated else 0)
    if not config.get("skip_all_evaluation"):
        assert train_metrics["y"]["accuracy"], "the training split still reports its metrics"


def test_columns_of_the_right_dtype_become_tensors_without_a_copy():
    import numpy as np

    from hvd_trainer.features.columns import column_tensor

    floats, ints = np.arange(6, dtype=np.float32), np.arange(6)
    assert column_tensor(floats, torch.float32).data_ptr() == floats.ctypes.data
    assert column_tensor(ints, torch.int64).data_ptr() == ints.ctypes.data
    converted = column_tensor(ints, torch.float32)  # another dtype: converted, as torch.as_tensor does
    assert converted.dtype == torch.float32 and converted.tolist() == floats.tolist()
    assert column_tensor(ints[::2], torch.int64).tolist() == [0, 2, 4]  # strided: a copy
    assert column_tensor([1, 2], torch.int64).tolist() == [1, 2]
