"""slurm/train_multinode.sbatch on a real two-node SLURM cluster that this module starts and stops.

The nodes are the hosts h1 and h2 of a netns cluster (own network namespace, address, hostname,
/etc/hosts, /run and /dev/shm; shared file system as with NFS): scripts/slurm_cluster_up.sh with
HVD_SLURM_NODES=2 runs a slurmd on each (NodeName=h1, h2), slurmctld on h1 and one munged, and
writes client wrappers (sbatch, scontrol, ... run on h1) that the jobs here are submitted with.

- launch: `sbatch --nodes=2 --ntasks-per-node=2 slurm/train_multinode.sbatch doctor` under each
  launch style (srun --mpi=pmix, mpirun from the allocation, horovodrun -H h1:2,h2:2 over ssh)
  ends COMPLETED with four ranks, two on each node, local and cross ranks right;
- protocol: under horovodrun (ranks started over ssh on both nodes), 2 nodes x 1 task train the
  digits example; the signal Slurm sends before a short --time limit (--signal=B:USR1@30) makes
  the ranks on both nodes stop together at one step with a checkpoint, the job requeue itself,
  run again on both nodes, resume from that step, and end COMPLETED with a final model
  bit-identical to an uninterrupted run at the same number of ranks (`reference_long`, 400 epochs,
  from tests/test_slurm.py). srun and mpirun run the signal, save, requeue and resume protocol on
  one node (tests/test_slurm.py): the batch shell gets the signal whatever the launcher, and the ranks
  agree on the stop through rank 0, so a launcher changes how the signal reaches the ranks, not
  what the second node does. Each run of this test waits for slurmctld's time-limit check (85-137
  s): one launch style here, not three, saves about 3 minutes of the suite.

The netns cluster uses its own prefix and subnet (HVD_SLURM_NETNS_PREFIX / _SUBNET, default hvds
on 10.213.49), apart from tests/test_multihost.py's. Where the machine cannot run it (not root,
no network namespaces, packages unavailable) the module is skipped with the script's reason.
"""
from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
from typing import Dict, List

import pytest

from conftest import REPO
# The one-node module's job helpers and its digits example.
from test_slurm import (LONG_ARGS, TERMINAL, Job, _assert_finished_like_the_reference,
                        _assert_saved_requeued_and_resumed, _release_before_a_time_limit_check, _slurm,
                        _slurm_config, _total_steps, digits, reference_long)

pytestmark = pytest.mark.slurm

__all__ = ["digits", "reference_long"]  # fixtures used by the tests below


UP = os.path.join(REPO, "scripts", "slurm_cluster_up.sh")
DOWN = os.path.join(REPO, "scripts", "slurm_cluster_down.sh")
PREFIX = os.environ.get("HVD_SLURM_NETNS_PREFIX", "hvds")
SUBNET = os.environ.get("HVD_SLURM_NETNS_SUBNET", "10.213.49")
HOME = f"/var/lib/hvd_trainer_slurm_{PREFIX}"
NODES = ["h1", "h2"]
LAUNCH_STYLES = ["srun", "mpirun", "horovodrun"]


@pytest.fixture(scope="module")
def slurm2_env():
    """The two-node cluster's environment for sbatch & co (up once per module, down if started here)."""
    if os.geteuid() != 0:
        pytest.skip("The two-node SLURM tests start SLURM on network-namespace hosts, which needs root.")
    script_env = dict(os.environ, HVD_SLURM_NODES="2", HVD_NETNS_PREFIX=PREFIX, HVD_NETNS_SUBNET=SUBNET,
                      HVD_SLURM_HOME=HOME)
    up = subprocess.run(["bash", UP], capture_output=True, text=True, timeout=900, env=script_env)
    if up.returncode == 77:
        pytest.skip(up.stderr.strip() or "scripts/slurm_cluster_up.sh cannot run on this machine.")
    assert up.returncode == 0, f"slurm_cluster_up.sh (2 nodes) failed:\n{up.stdout}\n{up.stderr}"
    started_here = "already up" not in up.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    # The wrappers in HOME/bin reach slurmctld on h1; jobs run this interpreter (the checkout's venv).
    env.update(PATH=f"{HOME}/bin:{env['PATH']}", SLURM_CONF=f"{HOME}/slurm.conf", PYTHONUNBUFFERED="1",
               PYTHON=sys.executable)
    level = _slurm_config(env).get("SlurmctldDebug", "info")
    # debug2 logs each time-limit check: see test_slurm._release_before_a_time_limit_check.
    _slurm(env, "scontrol", "setdebug", "debug2")
    try:
        yield env
    finally:
        subprocess.run(["scontrol", "setdebug", level], env=env, capture_output=True, timeout=60)
        if started_here:
            subprocess.run(["bash", DOWN], capture_output=True, text=True, timeout=180, env=script_env)


@pytest.fixture
def submit2(slurm2_env, tmp_path):
    """submit2(job_args, tasks_per_node, *sbatch_options, **script_variables) -> Job, on both nodes."""
    jobs: List[Job] = []

    def _submit(args, tasks_per_node: int, *sbatch: str, **variables) -> Job:
        env = dict(slurm2_env, OUTPUT_DIR=str(tmp_path / "results"), EXPERIMENT_NAME="exp", **variables)
        output = str(tmp_path / "slurm-%j.out")
        options = ["--parsable", f"--output={output}", "--nodes=2", f"--ntasks-per-node={tasks_per_node}",
                   "--cpus-per-task=1", "--time=8", "--signal=B:USR1@60", *sbatch]
        script = os.path.join(REPO, "slurm", "train_multinode.sbatch")
        job_id = _slurm(env, "sbatch", *options, script, *args, timeout=60).strip().split(";")[0]
        job = Job(slurm2_env, job_id, output.replace("%j", job_id), str(tmp_path / "results" / f"exp_job{job_id}"))
        jobs.append(job)
        return job

    yield _submit
    for job in jobs:
        try:
            if job.state() not in TERMINAL:
                _slurm(slurm2_env, "scancel", job.ref, check=False)
        except (AssertionError, IndexError, subprocess.SubprocessError):
            pass


def _rank_table(log: str) -> List[Dict[str, str]]:
    lines = [re.sub(r"^\[\d+\]<stdout>:", "", line).split() for line in log.splitlines()]
    header = next((cols for cols in lines if cols[:2] == ["rank", "size"]), None)
    assert header, log[-4000:]
    return [dict(zip(header, cols)) for cols in lines
            if len(cols) == len(header) and cols[0].isdigit() and cols[1].isdigit()]


@pytest.mark.parametrize("launch", LAUNCH_STYLES)
def test_doctor_runs_two_ranks_on_each_of_the_two_nodes(submit2, launch):
    job = submit2(["doctor"], 2, HVD_LAUNCH=launch)
    info = job.run_to_end()
    log = job.log()
    assert info["JobState"] == "COMPLETED", log[-4000:]
    assert info["NodeList"] == "h[1-2]", info
    assert f"launch {launch}, 4 task(s) on h[1-2]" in log, log[-4000:]
    assert "All ranks OK." in log and "Problems:" not in log, log[-4000:]
    assert re.search(rf"^(?:\[\d+\]<stdout>:)?\s+launcher\s+{launch}\s*$", log, re.M), log[-4000:]
    rows = _rank_table(log)
    assert sorted(int(r["rank"]) for r in rows) == [0, 1, 2, 3] and {r["size"] for r in rows} == {"4"}, log[-4000:]
    by_host = {h: sorted(int(r["local_rank"]) for r in rows if r["host"] == h) for h in NODES}
    assert by_host == {"h1": [0, 1], "h2": [0, 1]}, rows
    assert {r["host"]: r["cross_rank"] for r in rows} == {"h1": "0", "h2": "1"}, rows
    assert {r["local_size"] for r in rows} == {"2"}, rows


@pytest.mark.parametrize("launch", ["horovodrun"])
def test_time_limit_signal_saves_on_both_nodes_requeues_and_resumes_there(submit2, digits, reference_long, launch):
    # As test_slurm's one-node time-limit test: --time=1 with --signal=B:USR1@30, released so that
    # slurmctld's time-limit check, and with it the signal, comes 7-9 s after the start; the
    # requeued run gets a longer limit. One task on each node: two ranks, as in the reference.
    job = submit2([digits.config, digits.dataset, *LONG_ARGS], 1, "--hold", "--time=1", "--signal=B:USR1@30",
                  HVD_LAUNCH=launch)
    check = _release_before_a_time_limit_check(job, lead_s=10)
    job.release_after_requeue(1, "TimeLimit=5")
    info = job.run_to_end()
    log = job.log()
    assert info["NodeList"] == "h[1-2]", info
    _assert_saved_requeued_and_resumed(job, info, "USR1", _total_steps(reference_long))
    # Both runs had their two ranks on the two nodes (one task per node). The ranks agree on the
    # stop, so the rank on h2 may stop on rank 0's word before its own copy of the signal arrives
    # (then it does not print that it got one): the saved step and the final model are the proof.
    for run in (1, 2):
        assert re.search(rf"job {job.ref} run {run} .*launch {launch}, 2 task\(s\) on h\[1-2\]", log), log[-4000:]
    when = re.search(r"train\.sbatch \[([-\d]+ [:\d]+)\]: got SIGUSR1", log).group(1)
    signalled = datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()
    assert abs(signalled - check) < 3, f"the signal came at {signalled}, not at the time-limit check at {check}"
    _assert_finished_like_the_reference(job, reference_long)


DISCOVER_SLURM = os.path.join(REPO, "scripts", "elastic", "discover_hosts_slurm.sh")
# The netns cluster's state (scripts/netns/common.sh): each host's sshd writes its PID under run/.
NETNS_STATE = os.environ.get("HVD_NETNS_STATE", f"/tmp/hvd_trainer_netns/{PREFIX}")


def _discovery_rounds_job(env, workdir: str, rounds: int) -> Job:
    """A 2-node job (2 tasks per node) whose batch shell runs the discovery script `rounds` times: round r's
    output lands in workdir/hosts.r; before the next round it waits for workdir/go.r (the test's change)."""
    body = f"""set -u
for r in $(seq 1 {rounds}); do
  HVD_ELASTIC_PROBE_TIMEOUT=2 bash {DISCOVER_SLURM} >{workdir}/hosts.$r.tmp 2>{workdir}/err.$r
  echo "exit $?" >>{workdir}/err.$r
  mv {workdir}/hosts.$r.tmp {workdir}/hosts.$r
  [ "$r" = {rounds} ] && break
  for _ in $(seq 1 1200); do [ -e {workdir}/go.$r ] && break; sleep 0.2; done
done
"""
    output = os.path.join(workdir, "slurm-%j.out")
    job_id = _slurm(env, "sbatch", "--parsable", f"--output={output}", "--nodes=2", "--ntasks-per-node=2",
                    "--cpus-per-task=1", "--time=5", "--wrap", body, timeout=60).strip().split(";")[0]
    return Job(env, job_id, output.replace("%j", job_id), workdir)


def _discovered(job: Job, workdir: str, r: int) -> List[str]:
    path = os.path.join(workdir, f"hosts.{r}")
    job.wait(lambda info: os.path.exists(path), f"discovery round {r}", poll=0.2)
    with open(os.path.join(workdir, f"err.{r}")) as f:
        assert f.read().strip().splitlines()[-1] == "exit 0", f"round {r} failed"
    with open(path) as f:
        return f.read().split()


def test_slurm_discovery_lists_the_job_s_nodes_that_answer_ssh(slurm2_env, tmp_path):
    # The script's contract: the allocation's nodes whose sshd answers, with the job's tasks per node as
    # slots. A node whose sshd hangs (SIGSTOP: it accepts no login, as a hung node) is left out within the
    # probe timeout, and listed again once it answers (SIGCONT).
    workdir = str(tmp_path)
    job = _discovery_rounds_job(slurm2_env, workdir, rounds=3)
    try:
        assert _discovered(job, workdir, 1) == ["h1:2", "h2:2"]
        with open(os.path.join(NETNS_STATE, "run", "h2.sshd.pid")) as f:
            sshd = int(f.read().strip())
        os.kill(sshd, signal.SIGSTOP)
        try:
            open(os.path.join(workdir, "go.1"), "w").close()
            assert _discovered(job, workdir, 2) == ["h1:2"]
        finally:
            os.kill(sshd, signal.SIGCONT)
        open(os.path.join(workdir, "go.2"), "w").close()
        assert _discovered(job, workdir, 3) == ["h1:2", "h2:2"]
        info = job.wait(lambda i: i["JobState"] in TERMINAL, "the job's end", poll=0.5)
        assert info["JobState"] == "COMPLETED" and info["NodeList"] == "h[1-2]", (info, job.log()[-4000:])
    finally:
        if job.state() not in TERMINAL:
            _slurm(slurm2_env, "scancel", job.ref, check=False)


def test_slurm_discovery_outside_a_job_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", DISCOVER_SLURM], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not inside a SLURM job" in r.stderr and r.stdout == "", r
