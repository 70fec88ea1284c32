"""slurm/*.sbatch on a real one-node SLURM cluster that this module starts and stops.

Two kinds of test:
- launch: `sbatch slurm/train.sbatch doctor` under each launch style (srun --mpi=pmix, mpirun,
  horovodrun) ends COMPLETED with two ranks and no SLURM/Horovod size mismatch;
- protocol: the batch script's signal/requeue/resume protocol. The trainer there is
  tests/workers/requeue_standin.py, a stand-in that follows only the trainer's exit-code
  contract (75 after SIGUSR1/SIGTERM with a checkpoint saved, 0 when resumed, 1 failure,
  2 bad input), started exactly as the script starts the trainer. These tests check the batch
  script, not the trainer; tests that run the real `train` (digits example) are to follow, by
  switching TRAINER below.

The cluster comes from scripts/slurm_cluster_up.sh (root, Debian packages); where that cannot
run, the module is skipped with the script's reason. Every job has a time limit and a wait
limit, and whatever is still queued at the end of a test is cancelled.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import pytest

from conftest import REPO, WORKERS

pytestmark = pytest.mark.slurm

UP = os.path.join(REPO, "scripts", "slurm_cluster_up.sh")
DOWN = os.path.join(REPO, "scripts", "slurm_cluster_down.sh")
SLURM_HOME = os.environ.get("HVD_SLURM_HOME", "/var/lib/hvd_trainer_slurm")
NTASKS = 2
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
WAIT_S = 180  # per wait; generous because the machine is shared (2 cores)


@dataclasses.dataclass(frozen=True)
class TrainerUnderTest:
    """What the batch script starts with `train --config C --dataset D ...`."""

    cmd: Optional[str]  # HVD_TRAINER_CMD; None keeps the script's default `python -m hvd_trainer`
    # Files (config, dataset) the job is given, written into the test's tmp dir: name -> text.
    files: Dict[str, str]
    # True once every rank of run `restart` will handle SIGUSR1 (run_dir, restart) -> bool.
    ready: Callable[[str, int], bool]


def _standin_ready(run_dir: str, restart: int) -> bool:
    ready = os.path.join(run_dir, "standin")
    return all(os.path.exists(os.path.join(ready, f"ready.{restart}.{r}")) for r in range(NTASKS))


STANDIN = TrainerUnderTest(
    cmd=f"{sys.executable} {os.path.join(WORKERS, 'requeue_standin.py')}",
    files={"config.yaml": "trainer: {epochs: 1}\n", "data.csv": "x,y\n1,2\n"},
    ready=_standin_ready,
)

# THE switch for the requeue/resume tests: set it to the real trainer on the digits example once
# `python -m hvd_trainer train` exists (cmd=None, the example's config and data, and `ready`
# true once the run has started training). The failure and requeue-cap tests keep STANDIN: they
# need a trainer that fails, or never finishes, on purpose.
TRAINER = STANDIN


# ---- the cluster ---------------------------------------------------------------------------------


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
    try:
        yield env
    finally:
        if started_here:
            subprocess.run(["bash", DOWN], capture_output=True, text=True, timeout=180)


def _slurm(env, *cmd, check=True, timeout=60) -> str:
    result = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


class Job:
    """One sbatch job (or array task) of a test: submit, poll, signal, release, read its log."""

    def __init__(self, env, tmp_path, ref: str, output: str, run_dir: str):
        self.env, self.tmp_path, self.ref, self.output, self.run_dir = env, tmp_path, ref, output, run_dir

    def info(self) -> Dict[str, str]:
        text = _slurm(self.env, "scontrol", "show", "job", "-o", self.ref)
        return dict(re.findall(r"(\w+)=(\S*)", text.splitlines()[0]))

    def state(self) -> str:
        return self.info()["JobState"]

    def log(self) -> str:
        return open(self.output).read() if os.path.exists(self.output) else ""

    def wait(self, predicate, what: str, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info()
            if predicate(info):
                return info
            if info["JobState"] in TERMINAL:
                break
            time.sleep(0.5)
        pytest.fail(f"job {self.ref}: waited for {what}; it is {info['JobState']} "
                    f"(restarts {info.get('Restarts')}).\n--- job log ---\n{self.log()[-4000:]}")

    def wait_ready(self, trainer: TrainerUnderTest, restart: int):
        self.wait(lambda i: trainer.ready(self.run_dir, restart), f"run {restart + 1} to be ready for a signal")

    def signal_batch_shell(self, sig: str = "USR1"):
        # --batch: only the batch shell, as --signal=B:USR1@N does; the script forwards it.
        _slurm(self.env, "scancel", f"--signal={sig}", "--batch", self.ref)

    def release_after_requeue(self, restarts: int):
        """Wait until the job is requeued `restarts` times, then drop Slurm's ~120 s requeue delay."""
        self.wait(lambda i: int(i["Restarts"]) >= restarts and i["JobState"] == "PENDING",
                  f"requeue number {restarts}")
        _slurm(self.env, "scontrol", "update", f"JobId={self.ref}", "StartTime=now")

    def run_to_end(self, timeout: float = WAIT_S, max_requeues: int = 5) -> Dict[str, str]:
        """Release every requeue of the job until it ends; its final record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info()
            if info["JobState"] in TERMINAL:
                return info
            if info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime" and int(info["Restarts"]) <= max_requeues:
                _slurm(self.env, "scontrol", "update", f"JobId={self.ref}", "StartTime=now", check=False)
            time.sleep(0.5)
        pytest.fail(f"job {self.ref} did not end within {timeout}s.\n--- job log ---\n{self.log()[-4000:]}")

    def standin_events(self) -> List[dict]:
        path = os.path.join(self.run_dir, "standin.log")
        return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


@pytest.fixture
def submit(slurm_env, tmp_path):
    """submit(job_args, script=..., sbatch=[...], trainer=TRAINER, **script_variables) -> Job."""
    jobs: List[Job] = []

    def _submit(args=None, script="slurm/train.sbatch", sbatch=(), trainer: Optional[TrainerUnderTest] = TRAINER,
                **variables) -> Job:
        env = dict(slurm_env, OUTPUT_DIR=str(tmp_path / "results"), EXPERIMENT_NAME="exp", **variables)
        if trainer is not None:
            for name, text in trainer.files.items():
                (tmp_path / name).write_text(text)
            if trainer.cmd:
                env["HVD_TRAINER_CMD"] = trainer.cmd
        if args is None:
            args = [str(tmp_path / name) for name in trainer.files]
        array = any(str(opt).startswith("--array") for opt in sbatch)
        output = str(tmp_path / ("slurm-%A_%a.out" if array else "slurm-%j.out"))
        # Small and bounded: 2 tasks of 1 CPU, and a time limit in case everything else fails
        # (with the pre-limit signal moved inside it: the script's own asks for 300 s).
        options = ["--parsable", f"--output={output}", f"--ntasks-per-node={NTASKS}", "--cpus-per-task=1",
                   "--time=8", "--signal=B:USR1@60", *sbatch]
        job_id = _slurm(env, "sbatch", *options, os.path.join(REPO, script), *args, timeout=60).strip().split(";")[0]
        ref = f"{job_id}_0" if array else job_id
        output = output.replace("%A", job_id).replace("%a", "0").replace("%j", job_id)
        job = Job(slurm_env, tmp_path, ref, output, str(tmp_path / "results" / f"exp_job{ref}"))
        jobs.append(job)
        return job

    yield _submit
    for job in jobs:  # a failed or timed-out test leaves nothing queued or running
        try:
            if job.state() not in TERMINAL:
                _slurm(slurm_env, "scancel", job.ref, check=False)
        except (AssertionError, IndexError, subprocess.SubprocessError):
            pass


# ---- launch: every launch style runs `doctor` on 2 ranks ------------------------------------------

LAUNCH_STYLES = ["srun", "mpirun", "horovodrun"]


def _assert_doctor_saw_two_ranks(log: str, launcher: str):
    assert "All ranks OK." in log, log[-4000:]
    assert "Problems:" not in log, log[-4000:]  # e.g. SLURM_NTASKS != Horovod size
    rows = re.findall(r"^(?:\[\d+\]<stdout>:)?\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\d+\s+\S+\s*$", log, re.M)
    assert sorted((int(r), int(s)) for r, s, _, _ in rows) == [(0, NTASKS), (1, NTASKS)], log[-4000:]
    assert re.search(rf"^(?:\[\d+\]<stdout>:)?\s+launcher\s+{launcher}\s*$", log, re.M), log[-4000:]


@pytest.mark.parametrize("launch", LAUNCH_STYLES)
def test_doctor_job_sees_two_horovod_ranks_matching_the_allocation(submit, launch):
    job = submit(["doctor"], trainer=None, HVD_LAUNCH=launch)
    info = job.run_to_end()
    assert info["JobState"] == "COMPLETED", job.log()[-4000:]
    _assert_doctor_saw_two_ranks(job.log(), launch)
    assert f"launch {launch}, {NTASKS} task(s)" in job.log()


def test_multinode_script_runs_the_same_launch_on_the_nodes_it_gets(submit):
    # The cluster has one node; the multi-node script is run on it with its --nodes overridden.
    job = submit(["doctor"], script="slurm/train_multinode.sbatch", sbatch=["--nodes=1"], trainer=None, HVD_LAUNCH="srun")
    info = job.run_to_end()
    assert info["JobState"] == "COMPLETED", job.log()[-4000:]
    _assert_doctor_saw_two_ranks(job.log(), "srun")


# ---- protocol: signal, checkpoint, requeue, resume (stand-in trainer) ----------------------------


def _assert_requeued_once_and_resumed(job: Job, info: Dict[str, str]):
    log = job.log()
    assert info["JobState"] == "COMPLETED", log[-4000:]
    assert int(info["Restarts"]) >= 1, log[-4000:]
    assert f"requeueing job {job.ref}" in log, log[-4000:]
    assert f"resuming from {job.run_dir}" in log, log[-4000:]
    assert os.path.exists(os.path.join(job.run_dir, "model", "training_progress.json"))
    if TRAINER is STANDIN:
        starts = [e for e in job.standin_events() if e["event"] == "start"]
        assert starts[0]["resume"] is None and starts[-1]["resume"] == job.run_dir, starts
        assert "--resume" not in starts[0]["argv"]
        exits = [e for e in job.standin_events() if e["event"] == "exit"]
        assert exits[-1]["code"] == 0 and any(e["code"] == 75 for e in exits), exits


@pytest.mark.parametrize("launch,sig", [(launch, "USR1") for launch in LAUNCH_STYLES] + [("srun", "TERM")])
def test_signal_to_the_batch_shell_saves_requeues_and_resumes(submit, launch, sig):
    job = submit(HVD_LAUNCH=launch)
    job.wait_ready(TRAINER, restart=0)
    job.signal_batch_shell(sig)
    job.release_after_requeue(1)
    info = job.run_to_end()
    _assert_requeued_once_and_resumed(job, info)
    assert int(info["Restarts"]) == 1
    assert f"got SIG{sig}" in job.log()


def test_scancel_saves_a_checkpoint_but_does_not_requeue(submit):
    # A plain scancel sends SIGTERM too, and Slurm would accept the requeue: the script must see
    # that the job is being cancelled.
    job = submit(trainer=STANDIN)
    job.wait_ready(STANDIN, restart=0)
    _slurm(job.env, "scancel", job.ref)
    deadline = time.monotonic() + WAIT_S
    while "not requeued" not in job.log() and "requeueing" not in job.log() and time.monotonic() < deadline:
        time.sleep(0.5)
    info = job.wait(lambda i: i["JobState"] in TERMINAL, "the job to end")
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", job.log()[-4000:]
    assert "not requeued: the job is being cancelled" in job.log(), job.log()[-4000:]
    assert os.path.exists(os.path.join(job.run_dir, "model", "training_progress.json"))


def test_signal_before_the_time_limit_requeues_and_resumes(submit):
    # --time=1 with B:USR1@45: Slurm sends USR1 to the batch shell between 15 and 45 s after the
    # start (it checks limits every 30 s), well before the 60 s limit. Nothing else signals it.
    job = submit(sbatch=["--time=1", "--signal=B:USR1@45"])
    info = job.run_to_end(timeout=240)
    _assert_requeued_once_and_resumed(job, info)
    assert "got SIGUSR1" in job.log()


def test_array_task_requeues_itself_by_its_array_id(submit):
    job = submit(sbatch=["--array=0"])
    assert re.fullmatch(r"\d+_0", job.ref)
    job.wait_ready(TRAINER, restart=0)
    job.signal_batch_shell("USR1")
    job.release_after_requeue(1)
    _assert_requeued_once_and_resumed(job, job.run_to_end())


def test_failing_trainer_ends_failed_and_is_not_requeued(submit, tmp_path):
    job = submit([str(tmp_path / "config.yaml"), str(tmp_path / "data.csv"), "--standin-exit", "1"], trainer=STANDIN)
    info = job.run_to_end()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0", job.log()[-4000:]
    assert info["Restarts"] == "0"
    assert "failed with status 1: not requeued" in job.log()


def test_bad_input_ends_failed_with_status_2_and_is_not_requeued(submit, tmp_path):
    job = submit([str(tmp_path / "config.yaml"), str(tmp_path / "missing.csv")], trainer=STANDIN)
    info = job.run_to_end()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", job.log()[-4000:]
    assert info["Restarts"] == "0"
    assert "bad input" in job.log()


def test_requeue_cap_stops_a_job_that_keeps_asking_to_be_requeued(submit, tmp_path):
    args = [str(tmp_path / "config.yaml"), str(tmp_path / "data.csv"), "--standin-never-finish"]
    job = submit(args, trainer=STANDIN, MAX_REQUEUES="1")
    job.wait_ready(STANDIN, restart=0)
    job.signal_batch_shell("USR1")
    job.release_after_requeue(1)
    job.wait_ready(STANDIN, restart=1)
    job.signal_batch_shell("USR1")
    info = job.wait(lambda i: i["JobState"] in TERMINAL, "the job to end")
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "75:0", job.log()[-4000:]
    assert info["Restarts"] == "1"
    assert "not requeued: this job was requeued 1 times already (MAX_REQUEUES=1)" in job.log()
