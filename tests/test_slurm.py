"""slurm/*.sbatch on a real one-node SLURM cluster that this module starts and stops.

- launch: `sbatch slurm/train.sbatch doctor` under each launch style (srun --mpi=pmix, mpirun,
  horovodrun) ends COMPLETED with two ranks and no SLURM/Horovod size mismatch;
- protocol, with the real trainer on the digits example (`python -m hvd_trainer train`, 2 ranks,
  EPOCHS short epochs): under each launch style a SIGUSR1 to the batch shell in the middle of
  training (`scancel --signal=USR1 --batch`) makes the job save, requeue itself, resume and end
  COMPLETED with Ludwig's files and a final model bit-identical to an uninterrupted run of the
  same config at the same number of ranks (the `reference` fixture, run once with horovodrun);
  so does the signal that Slurm itself sends before a short --time limit (--signal=B:USR1@N),
  timed to come while the ranks start (held until the trainer handles it) or have just begun; a
  plain `scancel` makes the trainer save but the job is not requeued; a config that fails ends
  FAILED with the trainer's error in the job's output file and is never requeued;
- misbehaving trainers: tests/workers/requeue_standin.py stands in for the trainer only where a
  test needs one that misbehaves on purpose (one that fails at once; one that never finishes and
  keeps asking to be requeued, for the requeue cap). It follows the trainer's exit-code contract.

The cluster comes from scripts/slurm_cluster_up.sh (root, Debian packages); where that cannot
run, the module is skipped with the script's reason. For the time-limit test the module turns
slurmctld's log up to debug2 (and back at the end) to see when slurmctld checks time limits.
Every job has a time limit and a wait limit, and whatever is still queued at the end of a test
is cancelled; the cluster is brought down at the end if this module brought it up.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional

import pytest

from conftest import REPO, WORKERS, launcher_command, require_horovod, run_job

pytestmark = pytest.mark.slurm

UP = os.path.join(REPO, "scripts", "slurm_cluster_up.sh")
DOWN = os.path.join(REPO, "scripts", "slurm_cluster_down.sh")
SLURM_HOME = os.environ.get("HVD_SLURM_HOME", "/var/lib/hvd_trainer_slurm")
NTASKS = 2
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
WAIT_S = 240  # per wait; generous because the machine is shared (2 cores)

# The digits example, short and deterministic: no early stop, fixed seed (the CLI's default).
# 80 epochs are 800 steps of 2 x 64 rows with an evaluation and a checkpoint after each epoch:
# long enough that a signal sent after the first checkpoint arrives while training goes on even
# on a quiet machine (20 epochs took ~2 s there once the trainer's hot path got faster, and the
# job finished before the signal).
EPOCHS = 80
TRAIN_ARGS = ["--set", f"trainer.epochs={EPOCHS}", "--set", "trainer.early_stop=-1"]
# The time-limit signal comes 7-9 s after a job is released. Since each rank runs on a core of its
# own (distributed.horovod.cpu_affinity) 80 epochs take about 5.6 s (143 steps/s) on a quiet machine
# and are over by then, so the time-limit jobs train 400 epochs (about 28 s).
LONG_ARGS = ["--set", "trainer.epochs=400", "--set", "trainer.early_stop=-1"]
# What a finished run directory holds (Ludwig's layout).
RUN_FILES = ["description.json", "training_statistics.json", "model/model_hyperparameters.json",
             "model/training_set_metadata.json", "model/model_weights", "model/training_progress.json",
             "model/training_checkpoints/latest.ckpt", "model/training_checkpoints/best.ckpt"]
# A trainer that misbehaves on purpose (see the module docstring), for the requeue cap and a crash.
STANDIN_CMD = f"{sys.executable} {os.path.join(WORKERS, 'requeue_standin.py')}"


# ---- the cluster ---------------------------------------------------------------------------------


def _slurm(env, *cmd, check=True, timeout=60) -> str:
    result = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _slurm_config(env) -> Dict[str, str]:
    text = _slurm(env, "scontrol", "show", "config")
    return dict(re.findall(r"^(\w+)\s+=\s+(.*?)\s*$", text, re.M))


@pytest.fixture(scope="module")
def slurm_env():
    """Bring the local cluster up (once per module) and take it down if this module started it."""
    if os.geteuid() != 0:
        pytest.skip("The SLURM tests start a local SLURM cluster, which needs root.")
    up = subprocess.run(["bash", UP], capture_output=True, text=True, timeout=900)
    if up.returncode == 77:
        pytest.skip(up.stderr.strip() or "scripts/slurm_cluster_up.sh cannot run on this machine.")
    assert up.returncode == 0, f"slurm_cluster_up.sh failed:\n{up.stdout}\n{up.stderr}"
    started_here = "already up" not in up.stdout
    # Jobs inherit the submitting environment: drop SLURM variables of any enclosing job.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(SLURM_CONF=os.path.join(SLURM_HOME, "slurm.conf"), PYTHONUNBUFFERED="1")
    level = _slurm_config(env).get("SlurmctldDebug", "info")
    # debug2 logs each time-limit check ("Testing job time limits"): see _release_before_a_time_limit_check.
    _slurm(env, "scontrol", "setdebug", "debug2")
    try:
        yield env
    finally:
        subprocess.run(["scontrol", "setdebug", level], env=env, capture_output=True, timeout=60)
        if started_here:
            subprocess.run(["bash", DOWN], capture_output=True, text=True, timeout=180)


class Job:
    """One sbatch job (or array task) of a test: submit, poll, signal, release, read its log."""

    def __init__(self, env, ref: str, output: str, run_dir: str):
        self.env, self.ref, self.output, self.run_dir = env, ref, output, run_dir

    def info(self) -> Dict[str, str]:
        text = _slurm(self.env, "scontrol", "show", "job", "-o", self.ref)
        return dict(re.findall(r"(\w+)=(\S*)", text.splitlines()[0]))

    def state(self) -> str:
        return self.info()["JobState"]

    def log(self) -> str:
        return open(self.output, errors="replace").read() if os.path.exists(self.output) else ""

    def fail(self, why: str):
        pytest.fail(f"job {self.ref}: {why}\n--- job log (end) ---\n{self.log()[-6000:]}")

    def wait(self, predicate, what: str, timeout: float = WAIT_S, poll: float = 0.5):
        deadline = time.monotonic() + timeout
        info = self.info()
        while time.monotonic() < deadline:
            info = self.info()
            if predicate(info):
                return info
            if info["JobState"] in TERMINAL:
                break
            time.sleep(poll)
        self.fail(f"waited for {what}; it is {info['JobState']} (restarts {info.get('Restarts')}).")

    def wait_for_training(self):
        """Until the trainer has saved its first checkpoint, i.e. it is training."""
        progress = os.path.join(self.run_dir, "model", "training_progress.json")
        self.wait(lambda i: i["JobState"] == "RUNNING" and os.path.exists(progress),
                  "the first checkpoint (model/training_progress.json)", poll=0.2)

    def signal_batch_shell(self, sig: str = "USR1"):
        # --batch: only the batch shell, as --signal=B:USR1@N does; the script passes it on.
        _slurm(self.env, "scancel", f"--signal={sig}", "--batch", self.ref)

    # Slurm holds a requeued job back for ~120 s. Releasing it at once can start it in the same
    # second in which slurmd revoked the previous run's credential, and slurmd then refuses the
    # new run ("Job credential revoked") and the job FAILS; a few seconds are enough.
    REQUEUE_SETTLE_S = 3.0

    def release_after_requeue(self, restarts: int, *updates: str):
        """Wait until the job is requeued `restarts` times, then drop Slurm's ~120 s requeue delay."""
        self.wait(lambda i: int(i["Restarts"]) >= restarts and i["JobState"] == "PENDING",
                  f"requeue number {restarts}")
        time.sleep(self.REQUEUE_SETTLE_S)
        _slurm(self.env, "scontrol", "update", f"JobId={self.ref}", *updates, "StartTime=now")

    def run_to_end(self, timeout: float = WAIT_S, max_requeues: int = 3) -> Dict[str, str]:
        """Release every requeue of the job (up to max_requeues) until it ends; its final record."""
        deadline = time.monotonic() + timeout
        pending_since = None
        while time.monotonic() < deadline:
            info = self.info()
            if info["JobState"] in TERMINAL:
                return info
            if info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime" and int(info["Restarts"]) <= max_requeues:
                pending_since = pending_since or time.monotonic()
                if time.monotonic() - pending_since >= self.REQUEUE_SETTLE_S:
                    _slurm(self.env, "scontrol", "update", f"JobId={self.ref}", "StartTime=now", check=False)
            else:
                pending_since = None
            time.sleep(0.5)
        self.fail(f"did not end within {timeout}s.")


@pytest.fixture
def submit(slurm_env, tmp_path):
    """submit(job_args, script=..., sbatch=[...], cmd=None, **script_variables) -> Job.

    cmd is HVD_TRAINER_CMD; None keeps the script's own `python -m hvd_trainer`.
    """
    jobs: List[Job] = []

    def _submit(args, script="slurm/train.sbatch", sbatch=(), cmd: Optional[str] = None, **variables) -> Job:
        env = dict(slurm_env, OUTPUT_DIR=str(tmp_path / "results"), EXPERIMENT_NAME="exp", **variables)
        if cmd:
            env["HVD_TRAINER_CMD"] = cmd
        array = any(str(opt).startswith("--array") for opt in sbatch)
        output = str(tmp_path / ("slurm-%A_%a.out" if array else "slurm-%j.out"))
        # Small and bounded: 2 tasks of 1 CPU, and a time limit in case everything else fails
        # (with the pre-limit signal moved inside it: the script's own asks for 300 s).
        options = ["--parsable", f"--output={output}", f"--ntasks-per-node={NTASKS}", "--cpus-per-task=1",
                   "--time=8", "--signal=B:USR1@60", *sbatch]
        job_id = _slurm(env, "sbatch", *options, os.path.join(REPO, script), *args, timeout=60).strip().split(";")[0]
        ref = f"{job_id}_0" if array else job_id
        output = output.replace("%A", job_id).replace("%a", "0").replace("%j", job_id)
        job = Job(slurm_env, ref, output, str(tmp_path / "results" / f"exp_job{ref}"))
        jobs.append(job)
        return job

    yield _submit
    for job in jobs:  # a failed or timed-out test leaves nothing queued or running
        try:
            if job.state() not in TERMINAL:
                _slurm(slurm_env, "scancel", job.ref, check=False)
        except (AssertionError, IndexError, subprocess.SubprocessError):
            pass


# ---- the digits example and its uninterrupted run ------------------------------------------------


class Digits(NamedTuple):
    config: str
    dataset: str

    def job_args(self, config: Optional[str] = None) -> List[str]:
        return [config or self.config, self.dataset, *TRAIN_ARGS]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Digits:
    from hvd_trainer.examples import example_config_path, write_example_dataset

    data = write_example_dataset("digits", str(tmp_path_factory.mktemp("digits") / "digits.csv"))
    return Digits(example_config_path("digits"), data)


def _final_model(run_dir: str) -> Dict[str, object]:
    import torch

    model = os.path.join(run_dir, "model")
    latest = torch.load(os.path.join(model, "training_checkpoints", "latest.ckpt"), map_location="cpu", weights_only=True)
    return {"latest": latest["model"],
            "weights": torch.load(os.path.join(model, "model_weights"), map_location="cpu", weights_only=True),
            "progress": json.load(open(os.path.join(model, "training_progress.json")))}


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory) -> Dict[str, object]:
    """The same config run once without interruption: plain horovodrun -np 2, one thread per
    rank as in the jobs (--cpus-per-task=1). At np=2 Gloo and MPI sum gradients bit-identically."""
    return uninterrupted_run(digits, str(tmp_path_factory.mktemp("reference")), TRAIN_ARGS, timeout=300)


@pytest.fixture(scope="module")
def reference_long(digits, tmp_path_factory) -> Dict[str, object]:
    """The time-limit jobs' config (LONG_ARGS) run once without interruption, as `reference`."""
    return uninterrupted_run(digits, str(tmp_path_factory.mktemp("reference_long")), LONG_ARGS, timeout=600)


def uninterrupted_run(digits: "Digits", out: str, train_args: List[str], timeout: float) -> Dict[str, object]:
    """The final model of `train ... train_args` under plain horovodrun -np 2 (Gloo), one thread per rank."""
    require_horovod()
    cmd = launcher_command("gloo", NTASKS) + ["-m", "hvd_trainer", "train", "--config", digits.config, "--dataset",
                                              digits.dataset, "--output-directory", out, "--experiment-name",
                                              "ref", "--model-name", "run", *train_args]
    result = run_job(cmd, timeout=timeout, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-4000:]
    return _final_model(os.path.join(out, "ref_run"))


def _assert_finished_like_the_reference(job: Job, reference):
    """The expected files, in exactly the job's run directory, with the reference's final model."""
    import torch

    for name in RUN_FILES:
        assert os.path.exists(os.path.join(job.run_dir, name)), f"{name} is missing in {job.run_dir}"
    assert not os.path.exists(job.run_dir + "_1"), "a restart began a second run directory"
    assert not os.path.exists(os.path.join(job.run_dir, "requeue_requested")), "the finished run kept its requeue marker"
    assert json.load(open(os.path.join(job.run_dir, "description.json")))["world_size"] == NTASKS
    final = _final_model(job.run_dir)
    assert final["progress"]["epoch"] == reference["progress"]["epoch"]
    assert final["progress"]["steps"] == reference["progress"]["steps"]
    for part in ("latest", "weights"):
        mine, ref = final[part], reference[part]
        assert mine.keys() == ref.keys()
        different = [k for k in ref if not torch.equal(mine[k], ref[k])]
        assert not different, f"{part}: these tensors differ from the uninterrupted run's: {different}"


def _assert_saved_requeued_and_resumed(job: Job, info: Dict[str, str], sig: str, total_steps: int) -> int:
    """One requeue after a save on `sig`; returns the step the trainer stopped at."""
    log = job.log()
    assert info["JobState"] == "COMPLETED", log[-6000:]
    assert info["Restarts"] == "1", log[-6000:]
    assert f"got SIG{sig}" in log, log[-6000:]
    assert f"requeueing job {job.ref}" in log, log[-6000:]
    assert f"resuming from {job.run_dir}" in log, log[-6000:]
    # The trainer itself (rank 0's log) saved at the signal and continued from there.
    stopped = re.findall(r"Stopped at step (\d+) \(preempt\)", log)
    assert len(stopped) == 1, log[-6000:]
    step = int(stopped[0])
    assert 0 < step < total_steps, log[-6000:]
    assert f"Resuming from step {step} " in log, log[-6000:]
    return step


# ---- launch: every launch style runs `doctor` on 2 ranks ------------------------------------------

LAUNCH_STYLES = ["srun", "mpirun", "horovodrun"]


def _assert_doctor_saw_two_ranks(log: str, launcher: str):
    assert "All ranks OK." in log, log[-4000:]
    assert "Problems:" not in log, log[-4000:]  # e.g. SLURM_NTASKS != Horovod size
    # The rank table: a header naming the columns ("rank  size  local_rank ..."), then one row per rank.
    lines = [re.sub(r"^\[\d+\]<stdout>:", "", line).split() for line in log.splitlines()]
    header = next((cols for cols in lines if cols[:2] == ["rank", "size"]), None)
    assert header, log[-4000:]
    rows = [cols for cols in lines if len(cols) == len(header) and cols[0].isdigit() and cols[1].isdigit()]
    assert sorted((int(r[0]), int(r[1])) for r in rows) == [(0, NTASKS), (1, NTASKS)], log[-4000:]
    assert re.search(rf"^(?:\[\d+\]<stdout>:)?\s+launcher\s+{launcher}\s*$", log, re.M), log[-4000:]


@pytest.mark.parametrize("launch", LAUNCH_STYLES)
def test_doctor_job_sees_two_horovod_ranks_matching_the_allocation(submit, launch):
    job = submit(["doctor"], HVD_LAUNCH=launch)
    info = job.run_to_end()
    assert info["JobState"] == "COMPLETED", job.log()[-4000:]
    _assert_doctor_saw_two_ranks(job.log(), launch)
    assert f"launch {launch}, {NTASKS} task(s)" in job.log()


def test_multinode_script_runs_the_same_launch_on_the_nodes_it_gets(submit):
    # The cluster has one node; the multi-node script is run on it with its --nodes overridden.
    job = submit(["doctor"], script="slurm/train_multinode.sbatch", sbatch=["--nodes=1"], HVD_LAUNCH="srun")
    info = job.run_to_end()
    assert info["JobState"] == "COMPLETED", job.log()[-4000:]
    _assert_doctor_saw_two_ranks(job.log(), "srun")


# ---- failures: FAILED, the reason in the output file, never requeued ------------------------------


def test_a_config_that_fails_ends_failed_with_the_error_in_its_output_and_is_not_requeued(submit, digits, tmp_path):
    # A feature the data does not have: the trainer refuses it (exit 2, bad input) on every rank.
    config = tmp_path / "missing_feature.yaml"
    config.write_text(open(digits.config).read().replace("input_features:\n", "input_features:\n  - {name: pen_pressure, type: number}\n", 1))
    job = submit(digits.job_args(str(config)))
    info = job.run_to_end()
    log = job.log()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log[-4000:]
    assert info["Restarts"] == "0", log[-4000:]
    assert "hvd_trainer: error:" in log and "no column 'pen_pressure'" in log, log[-4000:]
    assert "bad input (config, data or launch): not requeued" in log, log[-4000:]


def test_a_missing_config_file_is_refused_before_anything_starts(submit, digits, tmp_path):
    job = submit([str(tmp_path / "nowhere.yaml"), digits.dataset])
    info = job.run_to_end()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", job.log()[-4000:]
    assert f"config file '{tmp_path / 'nowhere.yaml'}' not found" in job.log()


def _standin_files(tmp_path) -> List[str]:
    (tmp_path / "standin.yaml").write_text("trainer: {epochs: 1}\n")
    (tmp_path / "standin.csv").write_text("x,y\n1,2\n")
    return [str(tmp_path / "standin.yaml"), str(tmp_path / "standin.csv")]


def test_a_crashing_trainer_ends_failed_and_is_not_requeued(submit, tmp_path):
    # Stand-in: a trainer that fails (exit 1) at once, which the real one does not do on purpose.
    job = submit([*_standin_files(tmp_path), "--standin-exit", "1"], cmd=STANDIN_CMD)
    info = job.run_to_end()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0", job.log()[-4000:]
    assert info["Restarts"] == "0"
    assert "failed with status 1: not requeued" in job.log()


def _standin_ready(run_dir: str, restart: int) -> bool:
    ready = os.path.join(run_dir, "standin")
    return all(os.path.exists(os.path.join(ready, f"ready.{restart}.{r}")) for r in range(NTASKS))


def test_requeue_cap_stops_a_job_that_keeps_asking_to_be_requeued(submit, tmp_path):
    # Stand-in: a trainer that saves and asks to be requeued after every signal and never
    # finishes. After MAX_REQUEUES requeues the job ends FAILED (75) instead of looping forever.
    job = submit([*_standin_files(tmp_path), "--standin-never-finish"], cmd=STANDIN_CMD, MAX_REQUEUES="1")
    job.wait(lambda i: _standin_ready(job.run_dir, 0), "run 1 to be ready for a signal")
    job.signal_batch_shell("USR1")
    job.release_after_requeue(1)
    job.wait(lambda i: _standin_ready(job.run_dir, 1), "run 2 to be ready for a signal")
    job.signal_batch_shell("USR1")
    info = job.wait(lambda i: i["JobState"] in TERMINAL, "the job to end")
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "75:0", job.log()[-4000:]
    assert info["Restarts"] == "1"
    assert "not requeued: this job was requeued 1 times already (MAX_REQUEUES=1)" in job.log()


# ---- protocol: signal, checkpoint, requeue, resume (the real trainer) -----------------------------


def _total_steps(reference) -> int:
    return reference["progress"]["steps"]


@pytest.mark.parametrize("launch,array", [("srun", False), ("mpirun", False), ("horovodrun", True)],
                         ids=["srun", "mpirun", "horovodrun-array-task"])
def test_usr1_in_mid_training_saves_requeues_and_resumes_to_the_uninterrupted_model(submit, digits, reference, launch, array):
    # The horovodrun job is an array task, which must requeue itself as ARRAYID_TASKID.
    job = submit(digits.job_args(), sbatch=["--array=0"] if array else [], HVD_LAUNCH=launch)
    job.wait_for_training()
    job.signal_batch_shell("USR1")
    job.release_after_requeue(1)
    info = job.run_to_end()
    assert f"launch {launch}, {NTASKS} task(s)" in job.log()
    # The first run, too, was given --resume RUN_DIR, and the trainer started the run there.
    assert f"Nothing to resume in {job.run_dir} yet; starting a new run there." in job.log()
    _assert_saved_requeued_and_resumed(job, info, "USR1", _total_steps(reference))
    _assert_finished_like_the_reference(job, reference)


CHECK_LINE = re.compile(r"^\[(\S+)\] debug2: Testing job time limits", re.M)
CHECK_PERIOD_S = 30  # slurmctld's PERIODIC_TIMEOUT


def _last_time_limit_check(env) -> float:
    """When slurmctld last checked time limits (it does every 30 s), from its debug2 log."""
    path = _slurm_config(env).get("SlurmctldLogFile") or os.path.join(SLURM_HOME, "log", "slurmctld.log")
    deadline = time.time() + 2 * CHECK_PERIOD_S
    while time.time() < deadline:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 1_000_000))
            stamps = CHECK_LINE.findall(fh.read().decode(errors="replace"))
        if stamps:
            last = datetime.datetime.fromisoformat(stamps[-1]).timestamp()
            if time.time() - last < CHECK_PERIOD_S + 5:
                return last
        time.sleep(0.5)
    pytest.fail(f"slurmctld logged no time-limit check in {path} for {2 * CHECK_PERIOD_S} s (is it at debug2?).")


def _release_before_a_time_limit_check(job: Job, lead_s: float) -> float:
    """Release the held job lead_s before one of slurmctld's time-limit checks; returns that check's time.

    Slurm sends --signal=B:USR1@N at the first of those checks that finds the job within N+30 s of
    its limit (it sends early rather than late), so with --time=1 and N=30, at the first check
    after the start. Timing the start fixes when that is.
    """
    last = _last_time_limit_check(job.env)
    now = time.time()
    check = last + CHECK_PERIOD_S * math.ceil((now + lead_s - last) / CHECK_PERIOD_S)
    time.sleep(max(0.0, check - lead_s - time.time()))
    _slurm(job.env, "scontrol", "release", job.ref)
    return check


def test_signal_before_a_short_time_limit_saves_requeues_and_resumes_to_the_uninterrupted_model(submit, digits,
                                                                                                reference_long):
    # --time=1 with --signal=B:USR1@30: Slurm signals the batch shell at its first time-limit check
    # after the start, which the test times to come 7-9 s after the start: on a busy machine the
    # ranks are still loading then, and the rank wrapper holds the signal until the trainer handles
    # it (the trainer saves after its first step); on a quiet one training has just begun. Slurm
    # checks every 30 s, so aiming later would need a run longer than 30 s to be sure to hit it.
    # The requeued run gets a longer limit: with the same short one it would be signalled again
    # within 30 s of its start, and again after that.
    job = submit([digits.config, digits.dataset, *LONG_ARGS], sbatch=["--hold", "--time=1", "--signal=B:USR1@30"],
                 HVD_LAUNCH="horovodrun")
    check = _release_before_a_time_limit_check(job, lead_s=10)
    job.release_after_requeue(1, "TimeLimit=5")
    info = job.run_to_end()
    _assert_saved_requeued_and_resumed(job, info, "USR1", _total_steps(reference_long))
    when = re.search(r"train\.sbatch \[([-\d]+ [:\d]+)\]: got SIGUSR1", job.log()).group(1)
    signalled = datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()
    assert abs(signalled - check) < 3, f"the signal came at {signalled}, not at the time-limit check at {check}"
    _assert_finished_like_the_reference(job, reference_long)


def test_scancel_saves_a_checkpoint_but_does_not_requeue(submit, digits, reference):
    # A plain scancel sends SIGTERM too, and Slurm would accept the requeue: the script must see
    # that the job is being cancelled. The trainer still saves (within KillWait) and says so.
    job = submit(digits.job_args())
    job.wait_for_training()
    _slurm(job.env, "scancel", job.ref)
    deadline = time.monotonic() + WAIT_S
    while "not requeued" not in job.log() and "requeueing" not in job.log() and time.monotonic() < deadline:
        time.sleep(0.5)
    info = job.wait(lambda i: i["JobState"] in TERMINAL, "the job to end")
    log = job.log()
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", log[-4000:]
    assert "not requeued: the job is being cancelled" in log, log[-4000:]
    stopped = [int(s) for s in re.findall(r"Stopped at step (\d+) \(preempt\)", log)]
    assert len(stopped) == 1 and 0 < stopped[0] < _total_steps(reference), log[-4000:]
    assert os.path.exists(os.path.join(job.run_dir, "requeue_requested")), log[-4000:]
    assert json.load(open(os.path.join(job.run_dir, "model", "training_progress.json")))["steps"] == stopped[0]
