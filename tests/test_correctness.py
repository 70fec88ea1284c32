"""Cluster correctness (#14): every rank decides from the same facts, and what training reports is
what the saved model does. Real horovodrun -np 2 jobs."""
import json

import pytest

from conftest import WORKERS, launcher_command, require_horovod, run_job

from hvd_trainer.config import LRSchedulerConfig
from hvd_trainer.examples import example_config_path, write_example_dataset
from hvd_trainer.lr_scheduler import learning_rate_at

RESUME_WORKER = f"{WORKERS}/resume_checks.py"


def _resume_checks(out, run_dir, epochs, *extra, launcher="gloo"):
    require_horovod()
    r = run_job(launcher_command(launcher, 2) + [RESUME_WORKER, str(out), str(run_dir), str(epochs), *extra],
                timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    return r


def _rank0(out, tag):
    return json.load(open(out / f"{tag}.rank0.json"))


@pytest.mark.parametrize("launcher", ["gloo", "mpirun"])
def test_lr_schedule_with_gradient_accumulation_follows_the_formula_in_optimizer_steps(tmp_path, launcher):
    # 480 rows over 2 ranks, batch 16: 15 batches per epoch, 4 per optimizer step -> 4 steps per epoch.
    _resume_checks(tmp_path, tmp_path / "run", 3, "--tag", "L", "--accumulation", "4", "--lr-schedule",
                   launcher=launcher)
    run = _rank0(tmp_path, "L")
    assert (run["total_steps"], run["warmup_steps"], run["steps"]) == (12, 3, 12)
    lrs = run["step_learning_rates"]
    assert [step for step, _ in lrs] == list(range(1, 13)), "one LR per optimizer step"
    config = LRSchedulerConfig(warmup_fraction=0.25, decay="linear")
    for step, lr in lrs:
        assert lr == pytest.approx(learning_rate_at(step, run["base_lr"], config, 3, 12), rel=1e-6, abs=1e-12), step
    peak_step = next(step for step, lr in lrs if lr == pytest.approx(run["base_lr"], rel=1e-6))
    assert peak_step <= 3, "the full LR is reached at the end of the warmup, a quarter into the run"
    assert lrs[-1][1] < 0.1 * run["base_lr"], "decayed by the end of the run"


def test_resume_mid_epoch_with_gradient_accumulation_continues_bit_for_bit(tmp_path):
    # 15 batches per epoch, 3 per optimizer step: 5 steps per epoch, 30 in 6 epochs.
    _resume_checks(tmp_path, tmp_path / "straight", 6, "--tag", "S", "--accumulation", "3")
    _resume_checks(tmp_path, tmp_path / "run", 6, "--tag", "F", "--accumulation", "3", "--train-steps", "7")
    second = _resume_checks(tmp_path, tmp_path / "run", 6, "--resume", "--tag", "R", "--accumulation", "3")
    assert "Resuming from step 7 (epoch 1, batch 6 of the epoch)" in second.stdout
    straight, resumed = _rank0(tmp_path, "S"), _rank0(tmp_path, "R")
    assert resumed["steps"] == straight["steps"] == 30
    assert resumed["params"] == straight["params"]
    assert resumed["step_losses"] == straight["step_losses"]


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory):
    return write_example_dataset("digits", str(tmp_path_factory.mktemp("data") / "digits.csv"))


def _cli(*args, launcher="gloo"):
    require_horovod()
    return run_job(launcher_command(launcher, 2) + ["-m", "hvd_trainer", *args], timeout=300)


def test_batch_norm_reported_validation_metrics_are_those_of_the_saved_model(tmp_path, digits_csv):
    r = _cli("train", "--config", example_config_path("digits"), "--dataset", digits_csv, "--output-directory",
             str(tmp_path), "--experiment-name", "bn", "--model-name", "mlp", "--set", "combiner.norm=batch",
             "--set", "trainer.epochs=4", "--set", "trainer.checkpoints_per_epoch=2")
    assert r.returncode == 0, r.stdout[-5000:]
    run = tmp_path / "bn_mlp"
    r = _cli("evaluate", "--model-path", str(run), "--dataset", digits_csv, "--split", "validation",
             "--output-directory", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stdout[-4000:]
    evaluated = json.load(open(tmp_path / "eval" / "evaluation_statistics.json"))["label"]
    reported = json.load(open(run / "model" / "training_progress.json"))["best_eval_validation_metrics"]["label"]
    assert evaluated["loss"] == pytest.approx(reported["loss"], abs=1e-6)
    assert evaluated["accuracy"] == pytest.approx(reported["accuracy"], abs=1e-6)


def test_resume_of_a_mixed_precision_run_is_exact_and_every_rank_gets_the_grad_scaler(tmp_path):
    _resume_checks(tmp_path, tmp_path / "straight", 4, "--tag", "S", "--amp")
    _resume_checks(tmp_path, tmp_path / "run", 2, "--tag", "F", "--amp")
    _resume_checks(tmp_path, tmp_path / "run", 4, "--resume", "--tag", "R", "--amp")
    straight = _rank0(tmp_path, "S")
    resumed = [json.load(open(tmp_path / f"R.rank{r}.json")) for r in (0, 1)]
    assert straight["grad_scaler"] is not None
    assert resumed[0]["params"] == resumed[1]["params"] == straight["params"]
    assert resumed[0]["grad_scaler"] == resumed[1]["grad_scaler"] == straight["grad_scaler"]


@pytest.mark.parametrize("launcher", ["gloo", "mpirun"])
def test_learning_rate_scaling_follows_horovods_guidance_for_each_reduction(tmp_path, launcher):
    require_horovod()
    r = run_job(launcher_command(launcher, 2) + [f"{WORKERS}/correctness_checks.py", str(tmp_path)], timeout=180)
    assert r.returncode == 0, r.stdout[-4000:]
    ranks = [json.load(open(tmp_path / f"rank{i}.json")) for i in (0, 1)]
    assert ranks[0] == ranks[1], "every rank takes the same LR, or refuses the same combination"
    lr = ranks[0]
    assert lr["average/linear"] == pytest.approx(0.02) and lr["average/constant"] == pytest.approx(0.01)
    assert lr["adasum/linear"] == pytest.approx(0.01), "Adasum: no scaling by world size"
    assert lr["sum/constant"] == pytest.approx(0.01)
    assert lr["sum/linear"].startswith("ConfigError: distributed.op is sum with trainer.learning_rate_scaling linear")


def test_each_rank_gets_its_own_gpu_and_a_clear_error_when_ranks_outnumber_gpus():
    from hvd_trainer.distributed.horovod import gpu_for_local_rank
    from hvd_trainer.errors import LaunchError

    assert [gpu_for_local_rank(r, 4, 4) for r in range(4)] == [0, 1, 2, 3]
    assert [gpu_for_local_rank(r, 2, 8) for r in range(2)] == [0, 1]
    assert gpu_for_local_rank(3, 4, 1) == 0, "one visible GPU per rank (SLURM --gpus-per-task) is the rank's own"
    with pytest.raises(LaunchError, match="runs 4 ranks but has 2 GPUs"):
        gpu_for_local_rank(3, 4, 2)


# ---- errors that happen on one rank only ---------------------------------------------------------------------
def _rank_error(tmp_path, scenario, save_path):
    require_horovod()
    r = run_job(launcher_command("gloo", 2) + [f"{WORKERS}/rank_error_checks.py", scenario, str(tmp_path),
                                              str(save_path)], timeout=180)
    assert r.returncode == 0, r.stdout[-4000:]
    return [json.load(open(tmp_path / f"{scenario}.rank{i}.json")) for i in (0, 1)]


def test_an_output_directory_rank_0_cannot_create_is_the_same_error_on_every_rank(tmp_path):
    (tmp_path / "a_file").write_text("")
    ranks = _rank_error(tmp_path, "unwritable_output", tmp_path / "a_file" / "run")
    assert ranks[0] == ranks[1] and ranks[0]["error"] == "ConfigError"
    assert "cannot be created or written" in ranks[0]["message"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 16 KiB tmpfs: room for the run directory, not for a checkpoint."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("scenario", ["disk_full", "disk_full_in_loop"])
def test_a_full_disk_during_a_checkpoint_write_stops_every_rank_with_one_error(tmp_path, small_tmpfs, scenario):
    """Background writes (the default) and writes in the training loop (checkpoint_in_background: false)."""
    ranks = _rank_error(tmp_path, scenario, small_tmpfs / "run")
    assert ranks[0] == ranks[1] and ranks[0]["error"] == "CheckpointError"
    assert "Could not write" in ranks[0]["message"]
    assert "No space left on device" in ranks[0]["message"] and "--resume" in ranks[0]["message"]


def test_a_corrupt_best_checkpoint_is_the_same_error_on_every_rank(tmp_path):
    ranks = _rank_error(tmp_path, "corrupt_best", tmp_path / "run")
    assert ranks[0] == ranks[1] and ranks[0]["error"] == "CheckpointError"
    assert "best.ckpt" in ranks[0]["message"]


@pytest.mark.parametrize("scenario, failing", [("callback_on_rank0", 0), ("callback_on_rank1", 1)])
def test_a_callback_that_fails_on_one_rank_stops_every_rank(tmp_path, scenario, failing):
    ranks = _rank_error(tmp_path, scenario, tmp_path / "run")
    other = 1 - failing
    assert ranks[failing]["error"] == "ValueError"
    assert ranks[other]["error"] == "RankFailedError"
    assert ranks[failing]["message"] in ranks[other]["message"]
    assert f"Rank {failing} failed with ValueError" in ranks[other]["message"]


# ---- config checked before any work ------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    ({"validation_metric": "acuracy"}, "trainer.validation_metric is 'acuracy', but y (trainer.validation_field) "
                                       "reports loss, accuracy, hits_at_k; choose one of these. Did you mean 'accuracy'?"),
    ({"validation_field": "yy"}, "trainer.validation_field is 'yy', which is not an output of this model; use one "
                                 "of: y, combined. Did you mean 'y'?"),
    ({"learning_rate_scheduler": {"reduce_on_plateau": 1, "reduce_eval_metric": "los"}},
     "trainer.learning_rate_scheduler.reduce_eval_metric is 'los'"),
    ({"increase_batch_size_on_plateau": 1, "increase_batch_size_eval_metric": "mse"},
     "trainer.increase_batch_size_eval_metric is 'mse'"),
])
def test_metric_names_in_the_config_are_checked_when_the_trainer_is_built(config, message):
    from workers.synthetic import mlp_model

    from hvd_trainer.distributed import LocalStrategy
    from hvd_trainer.errors import ConfigError
    from hvd_trainer.trainer import Trainer

    with pytest.raises(ConfigError) as error:
        Trainer({"batch_size": 8, **config}, mlp_model(), distributed=LocalStrategy())
    assert message in str(error.value)


# ---- signals ------------------------------------------------------------------------------------------------
def test_a_preempted_run_that_saves_no_progress_does_not_ask_to_be_requeued(tmp_path):
    """With skip_save_progress there is nothing to resume from: exit 75 would requeue a fresh start forever."""
    import os
    import signal
    import time

    from conftest import finish_job, start_job

    require_horovod()
    run_dir = tmp_path / "run"
    proc = start_job(launcher_command("gloo", 2) + [RESUME_WORKER, str(tmp_path), str(run_dir), "6", "--tag", "P",
                                                    "--slow", "0.05", "--skip-save-progress"])
    deadline = time.time() + 120
    while not (tmp_path / "P.started1").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.kill(int((tmp_path / "P.pid1").read_text()), signal.SIGTERM)
    finish_job(proc, 90, "the job after SIGTERM")
    ranks = [json.load(open(tmp_path / f"P.rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["stop_reason"] == ranks[1]["stop_reason"] == "preempt_unsaved"
    assert ranks[0]["exit_code"] == ranks[1]["exit_code"] == 1
    assert ranks[0]["steps"] < 90
    assert not (run_dir / "training_checkpoints" / "latest.ckpt").exists()


def test_a_second_sigint_removes_the_temporary_files_of_writes_in_flight(tmp_path, monkeypatch):
    import os
    import threading

    from hvd_trainer import signals
    from hvd_trainer.checkpoint import atomic_write_bytes, remove_temp_files

    started, release = threading.Event(), threading.Event()

    def slow_write(fh):
        fh.write(b"half a checkpoint")
        started.set()
        release.wait(10)

    def write():
        try:
            atomic_write_bytes(str(tmp_path / "latest.ckpt"), slow_write)
        except FileNotFoundError:
            pass  # its temporary file was removed under it: in a real quit, the process is gone by now

    writer = threading.Thread(target=write)
    writer.start()
    assert started.wait(10)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "a write is in flight"
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    stop = signals.StopSignals(on_quit=remove_temp_files)
    stop._on_sigint(signal_number := 2, None)
    stop._on_sigint(signal_number, None)
    assert exits == [signals.EXIT_SECOND_SIGINT]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    release.set()
    writer.join(10)


def test_a_dataset_without_a_feature_column_is_refused_with_the_columns_it_has(tmp_path):
    from workers.synthetic import classification_columns, mlp_model

    from hvd_trainer.data import Dataset
    from hvd_trainer.distributed import LocalStrategy
    from hvd_trainer.errors import DataError
    from hvd_trainer.trainer import Trainer

    columns = classification_columns(64)
    del columns["y"]
    t = Trainer({"batch_size": 8, "epochs": 1}, mlp_model(), distributed=LocalStrategy())
    with pytest.raises(DataError, match="The dataset training has no column 'y', which the model's features need; "
                                        "its columns are 'x'"):
        t.train(Dataset(columns, name="training"), save_path=str(tmp_path))
