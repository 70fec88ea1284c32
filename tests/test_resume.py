"""Never lose a run: exact resume, kill -9, signals to one rank, world-size changes, broken files."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import WORKERS, finish_job, launch_env, launcher_command, require_horovod, run_job, start_job
from workers.synthetic import datasets, mlp_model

from hvd_trainer.checkpoint import CheckpointManager, Checkpoint, load_checkpoint_file
from hvd_trainer.distributed import LocalStrategy
from hvd_trainer.errors import CheckpointError
from hvd_trainer.signals import EXIT_REQUEUE
from hvd_trainer.trainer import Trainer

WORKER = os.path.join(WORKERS, "resume_checks.py")


def _cmd(launcher, np_, out, run_dir, epochs, *extra):
    return launcher_command(launcher, np_) + [WORKER, str(out), str(run_dir), str(epochs), *extra]


def _ranks(out, tag, n=2):
    return [json.load(open(out / f"{tag}.rank{r}.json")) for r in range(n)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """6 epochs at np=2 without interruption: the reference for every resume test."""
    require_horovod()
    out = tmp_path_factory.mktemp("straight")
    result = run_job(_cmd("gloo", 2, out, out / "run", 6, "--tag", "A"), timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    return _ranks(out, "A")


def test_resume_after_3_epochs_continues_the_same_run_bit_for_bit(straight_run, tmp_path):
    first = run_job(_cmd("gloo", 2, tmp_path, tmp_path / "run", 3, "--tag", "B1"), timeout=300)
    assert first.returncode == 0, first.stdout[-4000:]
    second = run_job(_cmd("gloo", 2, tmp_path, tmp_path / "run", 6, "--resume", "--tag", "B2"), timeout=300)
    assert second.returncode == 0, second.stdout[-4000:]
    resumed = _ranks(tmp_path, "B2")
    assert "Resuming from step 45" in second.stdout
    assert resumed[0]["params"] == resumed[1]["params"] == straight_run[0]["params"]
    assert resumed[0]["step_losses"] == straight_run[0]["step_losses"]
    assert [s for s, _ in resumed[0]["step_losses"]] == list(range(1, 91))


def _wait_for_steps(run_dir, steps, proc, timeout=120):
    path = os.path.join(run_dir, "training_progress.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        try:
            if json.load(open(path))["steps"] >= steps:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"training did not reach step {steps}")


def test_kill_9_of_one_rank_ends_the_job_and_the_resume_matches(straight_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_job(_cmd("gloo", 2, tmp_path, run_dir, 6, "--tag", "K", "--slow", "0.05"))
    _wait_for_steps(run_dir, 21, proc)
    victim = int(open(tmp_path / "K.pid1").read())
    os.kill(victim, signal.SIGKILL)
    start = time.time()
    finish_job(proc, 60, "the job after the signal")
    assert time.time() - start < 60
    assert proc.returncode != 0
    resumed = run_job(_cmd("gloo", 2, tmp_path, run_dir, 6, "--resume", "--tag", "K2"), timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert _ranks(tmp_path, "K2")[0]["params"] == straight_run[0]["params"]


@pytest.mark.parametrize("sig,reason,code", [
    (signal.SIGINT, "sigint", 0), (signal.SIGTERM, "preempt", EXIT_REQUEUE), (signal.SIGUSR1, "preempt", EXIT_REQUEUE),
], ids=["SIGINT", "SIGTERM", "SIGUSR1"])
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path, sig, reason, code):
    require_horovod()
    run_dir = tmp_path / "run"
    proc = start_job(_cmd("gloo", 2, tmp_path, run_dir, 6, "--tag", "S", "--slow", "0.05"))
    _wait_for_steps(run_dir, 8, proc)
    os.kill(int(open(tmp_path / "S.pid1").read()), sig)
    finish_job(proc, 60, "the job after the signal")
    ranks = _ranks(tmp_path, "S")
    assert ranks[0]["stop_reason"] == ranks[1]["stop_reason"] == reason
    assert ranks[0]["steps"] == ranks[1]["steps"] < 90
    assert ranks[0]["exit_code"] == ranks[1]["exit_code"] == code
    saved = load_checkpoint_file(str(run_dir / "training_checkpoints" / "latest.ckpt"))
    assert saved["meta"]["progress"]["steps"] == ranks[0]["steps"]
    assert json.load(open(run_dir / "training_progress.json"))["steps"] == ranks[0]["steps"]


def test_resume_at_another_world_size_rescales_and_continues(tmp_path):
    require_horovod()
    run_dir = tmp_path / "run"
    steps = []
    for np_, epochs, extra in ((2, 2, []), (1, 3, ["--resume"]), (2, 4, ["--resume"])):
        result = run_job(_cmd("gloo", np_, tmp_path, run_dir, epochs, "--tag", f"W{np_}{epochs}", *extra), timeout=300)
        assert result.returncode == 0, result.stdout[-4000:]
        steps.append(_ranks(tmp_path, f"W{np_}{epochs}", np_)[0]["steps"])
        if extra:
            assert "re-scaled" in result.stdout and "rank(s) with" in result.stdout
    # 2 epochs x 15 steps at np=2, then epoch 3 at np=1 (30 steps), then epoch 4 at np=2 (15 steps)
    assert steps == [30, 60, 75]


# ---- one process: broken files -----------------------------------------------------------------

def _train_local(save_path, epochs=2, resume=False, hidden=16):
    train, val, _ = datasets(n_train=64, n_val=32)
    t = Trainer({"epochs": epochs, "batch_size": 16, "early_stop": -1}, mlp_model(hidden=hidden), resume=resume,
                distributed=LocalStrategy(), skip_save_log=True)
    t.train(train, val, save_path=str(save_path))
    return t


def test_a_truncated_latest_checkpoint_is_reported_with_the_previous_one(tmp_path):
    _train_local(tmp_path, epochs=3)
    latest = tmp_path / "training_checkpoints" / "latest.ckpt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        _train_local(tmp_path, epochs=4, resume=True)
    msg = str(e.value)
    assert "truncated or corrupt" in msg and "previous.ckpt" in msg


def test_a_resume_whose_model_changed_shape_is_refused(tmp_path):
    _train_local(tmp_path, epochs=2)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        _train_local(tmp_path, epochs=3, resume=True, hidden=32)


def test_checkpoints_never_unpickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.ckpt"
    torch.save({"format_version": 1, "model": {}, "meta": {"x": Evil()}}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint_file(str(path))
    assert not (tmp_path / "pwned").exists()


WRITER = r"""
import sys, torch
from hvd_trainer.checkpoint import Checkpoint, CheckpointManager
from hvd_trainer.distributed import LocalStrategy
model = torch.nn.Linear(1500, 1500)
m = CheckpointManager(Checkpoint(LocalStrategy(), model), sys.argv[1], LocalStrategy(), background=sys.argv[2] == "1")
i = 0
while True:
    i += 1
    with torch.no_grad():
        model.bias.fill_(i)  # in place, as training does, possibly while the previous write runs
    m.save(step=i)
    if i == 1:
        m.wait()
    print(i, flush=True)
"""


@pytest.mark.parametrize("background", [False, True], ids=["in_loop", "background"])
def test_sigkill_during_checkpoint_writes_never_leaves_an_unreadable_latest(tmp_path, background):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay in (0.05, 0.13, 0.21, 0.34, 0.47, 0.55, 0.68, 0.8):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ckpt"), str(int(background))],
                                stdout=subprocess.PIPE, env=launch_env(), text=True)
        proc.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(delay)
        proc.kill()
        proc.wait()
        state = load_checkpoint_file(str(tmp_path / "ckpt" / "latest.ckpt"))
        assert state["model"]["bias"][0] == state["meta"]["step"]
        leftovers = [f for f in os.listdir(tmp_path / "ckpt") if f.endswith(".tmp")]
        for f in leftovers:  # a killed writer may leave its temp file; it is never read
            os.unlink(tmp_path / "ckpt" / f)


def test_a_background_checkpoint_holds_the_state_of_its_save_call(tmp_path):
    """The training steps that run while a checkpoint is written must not leak into it."""
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.Adam(model.parameters())
    manager = CheckpointManager(Checkpoint(LocalStrategy(), model, opt), str(tmp_path), LocalStrategy(), background=True)

    def step():
        opt.zero_grad()
        model(torch.randn(8, 64)).square().mean().backward()
        opt.step()

    step()
    expected_model = {k: v.clone() for k, v in model.state_dict().items()}
    expected_avg = opt.state_dict()["state"][0]["exp_avg"].clone()
    manager.save(step=1)
    for _ in range(5):  # in place, while the write may still be running
        step()
    manager.wait()
    saved = load_checkpoint_file(manager.latest_path)
    assert saved["meta"]["step"] == 1 and saved["optimizer"]["state"][0]["step"].item() == 1
    for k, v in expected_model.items():
        assert torch.equal(saved["model"][k], v)
    assert torch.equal(saved["optimizer"]["state"][0]["exp_avg"], expected_avg)
    # An evaluation's files queue behind each other, in order; a fourth waits for room.
    manager.save_best(step=2)
    manager.save_file(str(tmp_path / "model_weights"), model.state_dict())
    manager.save(step=2)
    manager.save(step=3)
    manager.wait()
    assert load_checkpoint_file(manager.previous_path)["meta"]["step"] == 2
    assert load_checkpoint_file(manager.latest_path)["meta"]["step"] == 3
    assert load_checkpoint_file(manager.best_path)["meta"]["step"] == 2
    weights = torch.load(tmp_path / "model_weights", weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_a_failed_background_write_is_raised_at_the_next_wait(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the checkpoint directory should be")
    manager = CheckpointManager(Checkpoint(LocalStrategy(), torch.nn.Linear(2, 2)), str(blocker / "checkpoints"),
                                LocalStrategy(), background=True)
    manager.save(step=1)  # returns at once; the write fails on its thread
    with pytest.raises(CheckpointError, match="in the background failed"):
        manager.wait()
    manager.wait()  # reported once
