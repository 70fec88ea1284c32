"""Elastic training under a real `horovodrun --min-np/--max-np --host-discovery-script` (Gloo), on a
netns cluster of three hosts (see test_multihost.py for the cluster; this one has its own prefix and
subnet). The discovery script is the shipped static-file one: the tests edit the file, as a user would.

Each job runs under a hard timeout that kills its process group; anything left inside the hosts is
ended after each test.
"""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import time
from typing import Dict, List, Optional

import pytest

from conftest import HOROVODRUN, REPO, WORKERS, launch_env
from test_multihost import PYTHON, Cluster, _write_digits_csv, cluster_for_a_module, strip_rank_prefixes

pytestmark = pytest.mark.multihost

PREFIX, SUBNET = "hvde", "10.213.48"
DISCOVER = os.path.join(REPO, "scripts", "elastic", "discover_hosts_file.sh")
EPOCHS = 4


@pytest.fixture(scope="module")
def cluster():
    yield from cluster_for_a_module(Cluster(prefix=PREFIX, num_hosts=3, subnet=SUBNET))


@pytest.fixture(autouse=True)
def _no_strays(request):
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").end_strays()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("elastic_data") / "digits.csv")
    _write_digits_csv(path)
    return path


class ElasticJob:
    """One horovodrun elastic job started on h1, its hosts file, and its output (a file, read as it grows)."""

    def __init__(self, cluster: Cluster, workdir, hosts: List[str], command: List[str], np: int, min_np: int,
                 max_np: int, env: Optional[Dict[str, str]] = None):
        self.cluster, self.workdir = cluster, str(workdir)
        self.hosts_file = os.path.join(self.workdir, "hosts.txt")
        self.set_hosts(hosts)
        self.log_path = os.path.join(self.workdir, "job.log")
        cmd = cluster.on("h1", HOROVODRUN, "-np", str(np), "--min-np", str(min_np), "--max-np", str(max_np),
                         "--host-discovery-script", DISCOVER, *command)
        job_env = cluster.job_env({"HVD_ELASTIC_HOSTS": self.hosts_file, **(env or {})})
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=launch_env(job_env),
                                     cwd=REPO, start_new_session=True)

    def set_hosts(self, hosts: List[str]) -> None:
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(f"{h}:1\n" for h in hosts))
        os.replace(tmp, self.hosts_file)

    def output(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return strip_rank_prefixes(f.read())

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"{text!r} never appeared in the job's output:\n{self.output()[-5000:]}")

    def wait_for_file(self, path: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{path} never appeared:\n{self.output()[-5000:]}")
            time.sleep(0.2)

    def kill_worker(self, host: str, marker: str) -> int:
        """SIGKILL the job's worker process(es) on `host` (their command line holds `marker`); how many."""
        killed = 0
        for h, pid, cmdline in self.cluster.job_processes():
            if (h == host and marker in cmdline and os.path.basename(cmdline.split()[0]).startswith("python")
                    and "horovodrun" not in cmdline):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"The job did not end within {timeout} s:\n{self.output()[-5000:]}")
        finally:
            self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def train_command(dataset: str, output: str, name: str, *sets: str) -> List[str]:
    command = [PYTHON, "-m", "hvd_trainer", "train", "--config", "hvd_trainer/examples/digits.yaml", "--dataset",
               dataset, "--output-directory", output, "--experiment-name", name, "--model-name", "elastic",
               "--set", f"trainer.epochs={EPOCHS}"]
    for s in sets:
        command += ["--set", s]
    return command


def run_files(run_dir: str) -> dict:
    """The run's final progress and statistics; asserts that every file a finished run has is there."""
    for name in ("description.json", "training_statistics.json", "model/model_hyperparameters.json",
                 "model/training_progress.json", "model/training_checkpoints/latest.ckpt",
                 "model/training_checkpoints/best.ckpt", "model/model_weights"):
        assert os.path.exists(os.path.join(run_dir, name)), f"{name} is missing under {run_dir}"
    with open(os.path.join(run_dir, "model", "training_progress.json")) as f:
        progress = json.load(f)
    with open(os.path.join(run_dir, "training_statistics.json")) as f:
        stats = json.load(f)
    return {"progress": progress, "stats": stats}


def assert_resized_and_complete(out: str, old: int, new: int, run_dir: str, epochs: int) -> dict:
    """The log's `Elastic: world size old -> new` line with the LR rescaled by new/old, and a complete run
    (run_files) that ended at world size `new` after every epoch, with one evaluation per epoch at increasing
    steps (one continuous record); returns run_files' dict and the step of the change under "changed_at"."""
    change = re.search(rf"Elastic: world size {old} -> {new} at step (\d+), LR ([0-9.e-]+) -> ([0-9.e-]+)", out)
    assert change, f"the world never went from {old} to {new}:\n{out[-6000:]}"
    print(change.group(0))
    assert float(change.group(3)) == pytest.approx(float(change.group(2)) * new / old, rel=1e-3)
    files = run_files(run_dir)
    assert files["progress"]["world_size"] == new
    assert files["progress"]["epoch"] == epochs, "every epoch must be trained"
    steps = [s for _, s, _ in files["stats"]["validation"]["label"]["accuracy"]]
    assert len(steps) == epochs and steps == sorted(steps), steps
    return dict(files, changed_at=int(change.group(1)))


def best_test_accuracy(files: dict) -> float:
    progress = files["progress"]
    return progress["best_eval_test_metrics"]["label"]["accuracy"]


@pytest.fixture(scope="module")
def undisturbed(cluster, digits, tmp_path_factory) -> dict:
    """The same job on three hosts, left alone: what a disturbed run is compared with."""
    workdir = tmp_path_factory.mktemp("undisturbed")
    job = ElasticJob(cluster, workdir, ["h1", "h2", "h3"], train_command(digits, str(workdir / "out"), "calm"),
                     np=3, min_np=2, max_np=3)
    rc = job.finish()
    assert rc == 0, job.output()[-5000:]
    return run_files(str(workdir / "out" / "calm_elastic"))


def wait_for_evaluations(job: ElasticJob, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    # Rank 0's line per evaluation (hvd_trainer/console.py): "step 7/28 epoch 1 | train loss ..."
    while len(re.findall(r"step \d+/\d+ epoch \d+ \|", job.output())) < count:
        if job.proc.poll() is not None or time.monotonic() > deadline:
            job.stop()
            raise AssertionError(f"{count} evaluation(s) never happened:\n{job.output()[-5000:]}")
        time.sleep(0.2)


def test_a_lost_host_shrinks_the_world_and_training_finishes(cluster, digits, undisturbed, tmp_path):
    job = ElasticJob(cluster, tmp_path, ["h1", "h2", "h3"], train_command(digits, str(tmp_path / "out"), "shrink"),
                     np=3, min_np=2, max_np=3)
    # By the second evaluation the first one's commit is made: a failure from here rolls back to a step > 0.
    wait_for_evaluations(job, 2)
    job.set_hosts(["h1", "h2"])
    assert job.kill_worker("h3", "hvd_trainer train") >= 1
    rc = job.finish()
    out = job.output()
    assert rc == 0, out[-5000:]
    files = assert_resized_and_complete(out, 3, 2, str(tmp_path / "out" / "shrink_elastic"), EPOCHS)
    assert files["changed_at"] > 0, "training carries on from a commit, not from the start"
    disturbed, calm = best_test_accuracy(files), best_test_accuracy(undisturbed)
    print(f"test accuracy: disturbed {disturbed:.4f}, undisturbed {calm:.4f}")
    assert abs(disturbed - calm) <= 0.01, (disturbed, calm)


def test_an_added_host_grows_the_world_and_training_finishes(cluster, digits, tmp_path):
    # Commits every 2 steps: the added host is noticed (and taken in) within 2 steps of its announcement.
    job = ElasticJob(cluster, tmp_path, ["h1", "h2"],
                     train_command(digits, str(tmp_path / "out"), "grow", "distributed.elastic_commit_steps=2"),
                     np=2, min_np=2, max_np=3)
    wait_for_evaluations(job, 1)
    job.set_hosts(["h1", "h2", "h3"])
    rc = job.finish()
    out = job.output()
    assert rc == 0, out[-5000:]
    assert_resized_and_complete(out, 2, 3, str(tmp_path / "out" / "grow_elastic"), EPOCHS)


def test_losing_the_host_of_rank_0_leaves_a_complete_run(cluster, digits, tmp_path):
    job = ElasticJob(cluster, tmp_path, ["h1", "h2", "h3"], train_command(digits, str(tmp_path / "out"), "rank0"),
                     np=3, min_np=2, max_np=3)
    wait_for_evaluations(job, 2)
    # Horovod does not give rank 0 to the first host listed: rank 0 is the one whose TensorBoard file
    # (events.out.tfevents.<time>.<host>.<pid>.0, flushed at each evaluation) is there.
    logs = tmp_path / "out" / "rank0_elastic" / "model" / "logs" / "training"
    first_writers = {name.split(".")[4] for name in os.listdir(logs)}
    assert len(first_writers) == 1, first_writers
    rank0_host = first_writers.pop()
    job.set_hosts([h for h in ("h1", "h2", "h3") if h != rank0_host])
    assert job.kill_worker(rank0_host, "hvd_trainer train") >= 1
    rc = job.finish()
    out = job.output()
    assert rc == 0, out[-5000:]
    # The new rank 0 speaks (it was quiet as rank 1 or 2) and writes the run's files and TensorBoard.
    assert "Elastic: world size 3 -> 2 at step" in out, out[-5000:]
    assert "Finished: " in out, out[-5000:]
    writers = {name.split(".")[4] for name in os.listdir(logs)}
    assert rank0_host in writers and len(writers) == 2, writers
    files = run_files(str(tmp_path / "out" / "rank0_elastic"))
    assert files["progress"]["world_size"] == 2 and files["progress"]["epoch"] == EPOCHS
    steps = [s for _, s, _ in files["stats"]["validation"]["label"]["accuracy"]]
    assert len(steps) == EPOCHS and steps == sorted(steps), steps


def wait_for_step(job: ElasticJob, step: int, timeout: float = 180) -> None:
    """Until rank 0's progress bar ("Training:  57%|...| 16/28 [") has passed `step`. The bar redraws its line
    with carriage returns, and horovodrun passes output on by the line: its count reaches the log with the
    next full line, at the latest the next evaluation's."""
    deadline = time.monotonic() + timeout
    while max(map(int, re.findall(r"\| (\d+)/\d+ \[", job.output())), default=0) < step:
        if job.proc.poll() is not None or time.monotonic() > deadline:
            job.stop()
            raise AssertionError(f"step {step} never came:\n{job.output()[-5000:]}")
        time.sleep(0.1)


def test_below_min_np_past_the_timeout_ends_with_a_clear_error_and_resume_finishes(cluster, digits, tmp_path):
    output = str(tmp_path / "out")
    # Batches of 8: 53 steps per epoch (an evaluation at each epoch's end), so that the kill, which comes some
    # seconds after the second evaluation, lands in mid-epoch as a rule; commits every 2 steps in between.
    job = ElasticJob(cluster, tmp_path, ["h1", "h2", "h3"],
                     train_command(digits, output, "starved", "trainer.batch_size=8",
                                   "distributed.elastic_commit_steps=2"),
                     np=3, min_np=3, max_np=3, env={"HOROVOD_ELASTIC_TIMEOUT": "10"})
    wait_for_evaluations(job, 1)
    evaluated = int(re.search(r"step (\d+)/\d+ epoch 1 \|", job.output()).group(1))
    wait_for_step(job, evaluated + 3)  # rank 0 is past it: every rank has made a commit after the evaluation
    job.set_hosts(["h1", "h2"])
    assert job.kill_worker("h3", "hvd_trainer train") >= 1
    rc = job.finish()
    out = job.output()
    assert rc != 0, out[-5000:]
    run_dir = os.path.join(output, "starved_elastic")
    latest = os.path.join(run_dir, "model", "training_checkpoints", "latest.ckpt")
    # Our paragraph, from the survivors, before horovodrun's own error ends the job.
    ours = re.search(r"Elastic: fewer than --min-np processes have been available for \d+ s.*?this job is ending.*? "
                     r"The last commit \(step (\d+), epoch \d+\) is saved: --resume continues from step (\d+) "
                     r"\(epoch (\d+)\) in (\S+)\. Continue the run from there with --resume.*?"
                     r"python -m hvd_trainer train --resume (\S+)'", out)
    assert ours, out[-5000:]
    commit_step, saved_step, saved_epoch = int(ours.group(1)), int(ours.group(2)), int(ours.group(3))
    assert (ours.group(4), ours.group(5)) == (latest, run_dir)
    # The commit, or a checkpoint rank 0 completed after it (the kill may come during an evaluation's save).
    assert saved_step >= commit_step > evaluated, "the last commit, not the last evaluation"
    completed = [int(m) for m in re.findall(r"step (\d+)/\d+ epoch \d+ \|", out)]
    print(f"evaluations {completed}; last commit at step {commit_step}; --resume from step {saved_step}")
    assert out.index(ours.group(0)) < out.index("enough resources to run at least 3 Horovod processes"), out[-5000:]
    resumed = subprocess.run(cluster.on("h1", HOROVODRUN, "-np", "2", "-H", "h1:1,h2:1", "--gloo", "--disable-cache",
                                        PYTHON, "-m", "hvd_trainer", "train", "--resume", run_dir, "--dataset", digits),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                             env=launch_env(cluster.job_env()), cwd=REPO)
    resumed_out = strip_rank_prefixes(resumed.stdout)
    assert resumed.returncode == 0, resumed_out[-5000:]
    assert f"Resuming from step {saved_step} (epoch {saved_epoch}," in resumed_out, resumed_out[-5000:]
    files = run_files(run_dir)
    assert files["progress"]["epoch"] == EPOCHS
    steps = [s for _, s, _ in files["stats"]["validation"]["label"]["accuracy"]]
    assert len(steps) == EPOCHS and steps == sorted(steps), steps


def kept_records(out_dir: str) -> List[dict]:
    """Every batch a process trained on, less those a rollback undid: for each step, only the records of
    the last world that trained it (the smallest size in a shrinking run), and per process its last one."""
    records = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("rows."):
            last: Dict[tuple, dict] = {}
            with open(os.path.join(out_dir, name)) as f:
                for line in f:
                    r = json.loads(line)
                    last[(r["step"], r["size"])] = r
            records += last.values()
    final_size = {}
    for r in records:
        final_size[r["step"]] = min(final_size.get(r["step"], r["size"]), r["size"])
    return [r for r in records if r["size"] == final_size[r["step"]]]


def test_every_sample_of_an_epoch_is_trained_on_once_across_a_change(cluster, tmp_path):
    out_dir = tmp_path / "rows"
    out_dir.mkdir()
    pause_at = 7
    job = ElasticJob(cluster, tmp_path, ["h1", "h2", "h3"],
                     [PYTHON, os.path.join(WORKERS, "elastic_checks.py"), str(out_dir), str(pause_at)],
                     np=3, min_np=2, max_np=3, env={"PYTHONPATH": f"{REPO}:{WORKERS}"})
    deadline = time.monotonic() + 180
    while len([n for n in os.listdir(out_dir) if n.startswith("paused.")]) < 3:
        assert job.proc.poll() is None and time.monotonic() < deadline, job.output()[-5000:]
        time.sleep(0.2)
    job.set_hosts(["h1", "h2"])
    assert job.kill_worker("h3", "elastic_checks.py") >= 1
    (out_dir / "go").write_text("")
    rc = job.finish()
    out = job.output()
    assert rc == 0, out[-5000:]
    assert "Elastic: world size 3 -> 2 at step 6" in out, out[-5000:]  # the commit before the pause (every 3 steps)
    result = json.loads((out_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["epoch"] == 2
    n = result["n"]
    per_epoch = collections.defaultdict(collections.Counter)
    for r in kept_records(str(out_dir)):
        per_epoch[r["epoch"]].update(r["rows"])
    assert sorted(per_epoch) == [0, 1]
    for epoch, counts in per_epoch.items():
        assert set(counts) == set(range(n)), f"epoch {epoch}: rows never trained on"
        repeats = sum(c - 1 for c in counts.values())
        # Only the padding that evens out the ranks' last batches repeats a row: fewer than the world size.
        assert repeats < 2, f"epoch {epoch}: {repeats} rows trained on twice"
