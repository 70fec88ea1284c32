"""Horovod across machines: `horovodrun -H h1:2,h2:2` over ssh, on a cluster of network namespaces.

scripts/netns_cluster_up.sh makes two "hosts" on this machine, each with its own network, hostname,
/etc/hosts and sshd (see that script). The launcher runs on h1 and reaches h2 over ssh, as on a
real cluster; the file system is shared, as with NFS, except where a test gives each host a private
tmpfs at the output path (PrivateDisks). Every job runs under a hard timeout that
kills its process group, and anything left inside the hosts is ended after each test.
Skipped, with the reason, where this machine cannot create namespaces (not root, no CAP_SYS_ADMIN).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import BIN, HOROVODRUN, REPO, launch_env, require_horovod, run_job

pytestmark = pytest.mark.multihost

UP = os.path.join(REPO, "scripts", "netns_cluster_up.sh")
DOWN = os.path.join(REPO, "scripts", "netns_cluster_down.sh")
ON_HOST = os.path.join(REPO, "scripts", "netns", "on_host.sh")
PYTHON = os.path.join(BIN, "python")
HOSTS = "h1:2,h2:2"
LAUNCHERS = ("gloo", "mpi")

# The trainer run across the two hosts (the test below skips while the example config or the
# `train` command is missing). Placeholders: {dataset} {output} {experiment} {model}; a few
# epochs keep the test short.
TRAIN_COMMAND = (
    "python -m hvd_trainer train --config hvd_trainer/examples/digits.yaml --dataset {dataset} "
    "--output-directory {output} --experiment-name {experiment} --model-name {model} "
    "--set trainer.epochs=3"
)

# A small Horovod program: every rank reports what it is, checks one allreduce, and (with a
# directory argument) writes its PID there and keeps allreducing until it is killed.
PROBE = r'''
import json, os, socket, sys, time
import torch
import horovod.torch as hvd
hvd.init()
info = dict(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(), local_size=hvd.local_size(),
            cross_rank=hvd.cross_rank(), cross_size=hvd.cross_size(), host=socket.gethostname(),
            controller="mpi" if hvd.mpi_enabled() else "gloo")
info["allreduce_sum"] = hvd.allreduce(torch.tensor([float(hvd.rank())]), op=hvd.Sum, name="probe_sum").item()
infos = hvd.allgather_object(info, name="probe_infos")
if hvd.rank() == 0:
    print("PROBE " + json.dumps(infos), flush=True)
if len(sys.argv) > 1:
    with open(os.path.join(sys.argv[1], "ready.%d" % hvd.rank()), "w") as f:
        f.write(str(os.getpid()))
    while True:
        hvd.allreduce(torch.ones(1000), name="spin")
        time.sleep(0.05)
'''

# Ranks 0,1 on h1 and 2,3 on h2: (host, local_rank, local_size, cross_rank, cross_size) per rank.
EXPECTED_PLACEMENT = {
    0: ("h1", 0, 2, 0, 2),
    1: ("h1", 1, 2, 0, 2),
    2: ("h2", 0, 2, 1, 2),
    3: ("h2", 1, 2, 1, 2),
}


# ---- the cluster ----------------------------------------------------------------------------


class Cluster:
    """A netns cluster started by scripts/netns_cluster_up.sh under a prefix of its own."""

    def __init__(self, prefix: str, num_hosts: int = 2, subnet: str = "10.213.47"):
        self.prefix = prefix
        self.num_hosts = num_hosts
        self.subnet = subnet
        self.state = os.path.join("/tmp", "hvd_trainer_netns", prefix)
        self.env = {"HVD_NETNS_PREFIX": prefix, "HVD_NETNS_STATE": self.state, "HVD_NETNS_SUBNET": subnet}

    def script_env(self) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        return env

    def up(self) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", UP, str(self.num_hosts)], env=self.script_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def down(self) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", DOWN], env=self.script_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def holder_pid(self, host: str) -> int:
        with open(os.path.join(self.state, "run", f"{host}.holder.pid")) as f:
            return int(f.read())

    def pids(self, host: str) -> List[int]:
        out = subprocess.run(["ip", "netns", "pids", self.namespace(host)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        return [int(p) for p in out.split()]

    def on(self, host: str, *cmd: str) -> List[str]:
        """The command line that runs `cmd` on `host` (network, mount and UTS of that host)."""
        return [ON_HOST, host, *cmd]

    def job_env(self, extra: Optional[dict] = None) -> dict:
        env = dict(self.env)
        # No tree spawn: every orted is started by mpirun through the cluster's ssh wrapper.
        env["OMPI_MCA_plm_rsh_no_tree_spawn"] = "1"
        env.update(extra or {})
        return env

    def job_processes(self) -> List[Tuple[str, int, str]]:
        """(host, pid, command line) of every process inside the hosts but the holders and sshd."""
        found = []
        for i in range(1, self.num_hosts + 1):
            host = f"h{i}"
            for pid in self.pids(host):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if cmdline.startswith(("sleep infinity", "sshd:", "/usr/sbin/sshd")) or not cmdline:
                    continue
                found.append((host, pid, cmdline))
        return found

    def end_strays(self) -> List[str]:
        """End job processes left inside the hosts. Only this cluster's namespaces are searched:
        every process there was started by it."""
        ended = []
        for host, pid, cmdline in self.job_processes():
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(f"{host}:{pid} {cmdline[:100]}")
            except ProcessLookupError:
                pass
        return ended


def _cannot_run_reason() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return "network namespaces exist only on Linux"
    if os.geteuid() != 0:
        return "the netns cluster needs root (it creates network, mount and UTS namespaces)"
    for tool in ("ip", "unshare", "nsenter", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2, util-linux, openssh-client)"
    probe = f"hvdtprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return f"this machine cannot create network namespaces ({r.stdout.strip()})"
    subprocess.run(["ip", "netns", "del", probe])
    return None


def cluster_for_a_module(c: Cluster) -> Iterator[Cluster]:
    """A module fixture's body: skip where the machine cannot run it, bring `c` up, take it down after."""
    reason = _cannot_run_reason()
    if reason:
        pytest.skip(f"Multi-host tests skipped: {reason}.")
    require_horovod()
    r = c.up()
    if r.returncode != 0:
        c.down()
        pytest.fail(f"The netns cluster did not come up:\n{r.stdout[-3000:]}")
    yield c
    c.end_strays()
    r = c.down()
    assert r.returncode == 0, r.stdout


@pytest.fixture(scope="module")
def cluster():
    yield from cluster_for_a_module(Cluster(prefix=f"hvdt{os.getpid()}"))


@pytest.fixture(autouse=True)
def _no_strays(request):
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").end_strays()


@pytest.fixture(scope="module")
def probe_script(tmp_path_factory) -> str:
    # /tmp is shared by all hosts, as a cluster's NFS home would be.
    path = tmp_path_factory.mktemp("multihost") / "probe.py"
    path.write_text(PROBE)
    return str(path)


def horovodrun(launcher: str, *command: str, hosts: str = HOSTS, np: int = 4, extra: Tuple[str, ...] = ()) -> List[str]:
    return [HOROVODRUN, "-np", str(np), "-H", hosts, f"--{launcher}", "--disable-cache", *extra, *command]


_RANK_PREFIX = re.compile(r"^\[[0-9,]+\]<std(?:out|err)>:")


def strip_rank_prefixes(out: str) -> str:
    return "\n".join(_RANK_PREFIX.sub("", line) for line in out.splitlines())


def probe_results(out: str) -> List[Dict]:
    for line in strip_rank_prefixes(out).splitlines():
        if line.startswith("PROBE "):
            # raw_decode: mpirun may glue the next tag ("[1,0]<stdout>:") to the end of the line.
            return json.JSONDecoder().raw_decode(line[len("PROBE "):])[0]
    raise AssertionError(f"The probe printed no result:\n{out[-4000:]}")


# ---- the cluster itself ---------------------------------------------------------------------


def test_every_host_has_its_own_name_address_and_ssh(cluster):
    for i, host in ((1, "h1"), (2, "h2")):
        r = run_job(cluster.on(host, "sh", "-c", "hostname; getent hosts $(hostname); ip -4 -o addr show dev eth0; ip route"),
                    timeout=30, env=cluster.job_env())
        assert r.returncode == 0, r.stdout
        lines = r.stdout.splitlines()
        assert lines[0] == host
        assert lines[1].split() == [f"10.213.47.{10 + i}", host], "the hostname must resolve to the routable address"
        assert f"10.213.47.{10 + i}/24" in lines[2]
        assert not any(line.startswith("default") for line in lines[3:]), "the hosts must have no route out"
    r = run_job(cluster.on("h1", "ssh", "h2", "hostname"), timeout=30, env=cluster.job_env())
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "h2", r.stdout


def test_cluster_scripts_are_idempotent_and_down_leaves_nothing():
    reason = _cannot_run_reason()
    if reason:
        pytest.skip(f"Multi-host tests skipped: {reason}.")
    c = Cluster(prefix=f"hvdi{os.getpid()}", num_hosts=1)
    try:
        first = c.up()
        assert first.returncode == 0, first.stdout
        holder = c.holder_pid("h1")
        again = c.up()
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout
        assert c.holder_pid("h1") == holder, "a second 'up' must not restart a running cluster"
    finally:
        d1 = c.down()
        d2 = c.down()
    assert d1.returncode == 0 and d2.returncode == 0, d1.stdout + d2.stdout
    listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
    assert c.prefix not in listed
    assert not os.path.exists(f"/proc/{holder}"), "down must end the processes it started"
    assert not os.path.exists(c.state)


# ---- jobs across the hosts ------------------------------------------------------------------


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_doctor_runs_on_every_rank_across_two_hosts(cluster, launcher):
    r = run_job(cluster.on("h1", *horovodrun(launcher, PYTHON, "-m", "hvd_trainer", "doctor")),
                timeout=120, env=cluster.job_env())
    out = strip_rank_prefixes(r.stdout)
    assert r.returncode == 0, out[-4000:]
    assert "All ranks OK." in out
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s*$", line)
        if m:
            rank, size, local_rank, local_size, cross_rank, host = m.groups()
            rows[int(rank)] = (host, int(local_rank), int(local_size), int(cross_rank), int(size))
    assert rows == {rank: (host, lr, ls, cr, 4) for rank, (host, lr, ls, cr, _) in EXPECTED_PLACEMENT.items()}, out
    assert f"controller   {launcher}" in out


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_local_and_cross_ranks_are_right_on_every_rank(cluster, probe_script, launcher):
    r = run_job(cluster.on("h1", *horovodrun(launcher, PYTHON, probe_script)), timeout=120, env=cluster.job_env())
    assert r.returncode == 0, r.stdout[-4000:]
    infos = probe_results(r.stdout)
    assert len(infos) == 4
    for info in infos:
        host, local_rank, local_size, cross_rank, cross_size = EXPECTED_PLACEMENT[info["rank"]]
        assert (info["host"], info["local_rank"], info["local_size"], info["cross_rank"], info["cross_size"]) == \
            (host, local_rank, local_size, cross_rank, cross_size), info
        assert info["size"] == 4 and info["controller"] == launcher
        assert info["allreduce_sum"] == 6.0, "an allreduce across both hosts must add every rank's value"


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_killing_a_worker_on_h2_ends_the_job_with_an_error_within_60s(cluster, probe_script, launcher, tmp_path):
    ready = tmp_path / "ready"
    ready.mkdir()
    cmd = cluster.on("h1", *horovodrun(launcher, PYTHON, probe_script, str(ready)))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=launch_env(cluster.job_env()), cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(list(ready.glob("ready.*"))) < 4:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"The job did not start on all 4 ranks:\n{proc.communicate()[0][-4000:]}")
            time.sleep(0.2)
        victim = int((ready / "ready.3").read_text())
        assert victim in cluster.pids("h2"), "rank 3 must run on h2"
        time.sleep(1.0)  # let the ranks settle into the allreduce loop
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0]
            pytest.fail(f"The job was still running 60 s after a worker on h2 was killed:\n{out[-4000:]}")
        elapsed = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0, out[-4000:]
    assert elapsed < 60
    # Nothing of the job may keep running on either host (ranks on h2 notice the broken
    # connections on their own; give them a moment on a loaded machine).
    deadline = time.monotonic() + 20
    while cluster.job_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.end_strays() == [], "processes of the job were still running 20 s after it ended"


def _write_digits_csv(path: str) -> None:
    """The digits example's dataset (scikit-learn's 8x8 digits) as CSV."""
    try:
        from hvd_trainer.examples import write_example_dataset
    except ImportError:
        write_example_dataset = None
    if write_example_dataset is not None:
        write_example_dataset("digits", path)
        return
    from sklearn.datasets import load_digits

    digits = load_digits()
    header = [f"pixel_{i}" for i in range(digits.data.shape[1])] + ["label"]
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row, label in zip(digits.data, digits.target):
            f.write(",".join(str(int(v)) for v in row) + f",{int(label)}\n")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_trainer_trains_across_two_hosts(cluster, launcher, tmp_path):
    if not os.path.exists(os.path.join(REPO, "hvd_trainer", "examples", "digits.yaml")):
        pytest.skip("hvd_trainer/examples/digits.yaml does not exist yet; this test runs once it does.")
    if run_job([PYTHON, "-m", "hvd_trainer", "train", "--help"], timeout=60).returncode != 0:
        pytest.skip("'python -m hvd_trainer train' does not exist yet; this test runs once it does.")
    dataset = str(tmp_path / "digits.csv")
    _write_digits_csv(dataset)
    output = tmp_path / "results"
    experiment, model = "multihost", launcher
    command = TRAIN_COMMAND.format(dataset=dataset, output=output, experiment=experiment, model=model).split()
    if command[0] == "python":
        command[0] = PYTHON
    r = run_job(cluster.on("h1", *horovodrun(launcher, *command)), timeout=240, env=cluster.job_env())
    assert r.returncode == 0, strip_rank_prefixes(r.stdout)[-4000:]
    run_dir = output / f"{experiment}_{model}"
    for name in ("description.json", "training_statistics.json", "model/model_hyperparameters.json",
                 "model/training_progress.json", "model/training_checkpoints/latest.ckpt"):
        assert (run_dir / name).exists(), f"{name} is missing under {run_dir}"


# ---- pre-flight checks on the cluster -------------------------------------------------------

_PREFLIGHT = (
    "import json, sys\n"
    "from hvd_trainer.preflight import check_hosts, parse_hosts\n"
    "kw = json.loads(sys.argv[3])\n"
    "print('PREFLIGHT ' + json.dumps(check_hosts(parse_hosts(sys.argv[1]), sys.argv[2] or None, **kw)))\n"
)


def _doctor_has_hosts_option(cluster) -> bool:
    r = run_job([PYTHON, "-m", "hvd_trainer", "doctor", "--help"], timeout=60)
    return r.returncode == 0 and "--hosts" in r.stdout


def preflight(cluster, hosts: str, interface: Optional[str] = None, on: str = "h1",
              wrap: Tuple[str, ...] = (), **kwargs) -> List[str]:
    """check_hosts() as run on host `on` (optionally inside a wrapper command)."""
    cmd = cluster.on(on, *wrap, PYTHON, "-c", _PREFLIGHT, hosts, interface or "", json.dumps(kwargs))
    r = run_job(cmd, timeout=60, env=cluster.job_env())
    assert r.returncode == 0, r.stdout[-4000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("PREFLIGHT ")][-1]
    return json.loads(line[len("PREFLIGHT "):])


def preflight_cli_or_function(cluster, hosts: str, interface: Optional[str] = None) -> Tuple[bool, str]:
    """(passed, text) from `hvd_trainer doctor --hosts` where it exists, else from check_hosts()."""
    if _doctor_has_hosts_option(cluster):
        extra = ["--network-interface", interface] if interface else []
        r = run_job(cluster.on("h1", PYTHON, "-m", "hvd_trainer", "doctor", "--hosts", hosts, *extra),
                    timeout=60, env=cluster.job_env())
        assert "Traceback" not in r.stdout and "Segmentation" not in r.stdout, r.stdout
        return r.returncode == 0, r.stdout
    problems = preflight(cluster, hosts, interface)
    return not problems, "\n".join(problems)


def test_preflight_passes_on_a_healthy_cluster(cluster):
    assert preflight(cluster, HOSTS, "eth0") == []


def test_a_host_name_that_does_not_resolve_gets_a_clear_error(cluster):
    passed, text = preflight_cli_or_function(cluster, "h1:2,h9:2")
    assert not passed
    assert "'h9' does not resolve" in text and "/etc/hosts" in text


def test_a_wrong_network_interface_gets_a_clear_error(cluster):
    passed, text = preflight_cli_or_function(cluster, HOSTS, "eth9")
    assert not passed
    assert "'eth9' does not exist on this machine" in text and "eth0" in text


def test_an_interface_missing_on_a_remote_host_is_reported(cluster):
    ns = cluster.namespace("h1")
    # An interface only h1 has (a lone bridge: the dummy driver is not in every kernel).
    subprocess.run(["ip", "-n", ns, "link", "add", "hvdx0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "addr", "add", "192.168.254.1/32", "dev", "hvdx0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "hvdx0", "up"], check=True)
        problems = preflight(cluster, HOSTS, "hvdx0")
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", "hvdx0"])
    assert len(problems) == 1 and "do not exist on 'h2'" in problems[0], problems


def test_a_launcher_whose_name_maps_to_127_0_1_1_is_told_why_gloo_breaks(cluster, tmp_path):
    # The Debian default: the machine's own name on 127.0.1.1. Run the check on h1 with such an
    # /etc/hosts, in a throwaway mount namespace so the cluster itself is untouched.
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.1.1 h1\n10.213.47.12 h2\n")
    wrap = ("unshare", "--mount", "sh", "-c", f'mount --bind {hosts} /etc/hosts && exec "$@"', "sh")
    problems = preflight(cluster, HOSTS, wrap=wrap)
    assert any("127.0.1.1" in p and "loopback" in p and "Gloo" in p for p in problems), problems


def test_ssh_that_cannot_log_in_is_reported(cluster):
    problems = preflight(cluster, HOSTS, ssh_port=2222, ssh_timeout=3)
    assert len(problems) == 1, problems
    assert "Cannot log in to 'h2' with ssh" in problems[0] and "Connection refused" in problems[0]


def test_two_machines_with_one_hostname_are_reported(cluster):
    # OpenMPI segfaults in MPI_Comm_split when two machines share a hostname; give h2 the
    # name h1 for a moment (its sshd sessions inherit the UTS namespace).
    h2 = str(cluster.holder_pid("h2"))
    subprocess.run(["nsenter", "-t", h2, "--uts", "hostname", "h1"], check=True)
    try:
        problems = preflight(cluster, HOSTS)
    finally:
        subprocess.run(["nsenter", "-t", h2, "--uts", "hostname", "h2"], check=True)
    assert any("all call themselves 'h1'" in p and "MPI_Comm_split" in p for p in problems), problems


# ---- a private output directory on every host -----------------------------------------------


class PrivateDisks:
    """A tmpfs of its own on every host, mounted at one path: a cluster without a shared output directory.

    Each host of the cluster already lives in a mount namespace of its own, held by its holder
    process (netns_cluster_up.sh starts it with `unshare --mount --propagation private`), and
    everything "on the host" is inside that namespace: sshd was started in it with nsenter, so
    the ranks that horovodrun starts over ssh inherit it, and on_host.sh enters it too. A tmpfs
    mounted at `path` through on_host.sh therefore exists for that host only: the other host, and
    this machine, still see the (empty) directory underneath. No new namespace per command is
    needed (a bare `ip netns exec` would make one per invocation, and lose the mount).
    """

    def __init__(self, cluster: Cluster, path: str, hosts: Tuple[str, ...] = ("h1", "h2")):
        self.cluster, self.path, self.hosts = cluster, path, hosts

    def __enter__(self) -> "PrivateDisks":
        os.makedirs(self.path, exist_ok=True)
        for host in self.hosts:
            r = run_job(self.cluster.on(host, "mount", "-t", "tmpfs", "-o", "size=64m,mode=0755",
                                        f"hvd-{host}-private", self.path), timeout=30, env=self.cluster.job_env())
            assert r.returncode == 0, f"could not mount a private tmpfs on {host}: {r.stdout}"
        return self

    def __exit__(self, *exc) -> None:
        for host in self.hosts:
            run_job(self.cluster.on(host, "umount", "-l", self.path), timeout=30, env=self.cluster.job_env())

    def read(self, host: str, relative: str) -> Optional[str]:
        """The file's text as `host` sees it (None when it does not exist there)."""
        r = run_job(self.cluster.on(host, "cat", os.path.join(self.path, relative)), timeout=30,
                    env=self.cluster.job_env())
        return r.stdout if r.returncode == 0 else None


def _digits_dataset(tmp_path) -> str:
    """The digits CSV on the shared /tmp (every host reads the data; only the output is private)."""
    if not os.path.exists(os.path.join(REPO, "hvd_trainer", "examples", "digits.yaml")):
        pytest.skip("hvd_trainer/examples/digits.yaml does not exist yet.")
    dataset = str(tmp_path / "digits.csv")
    _write_digits_csv(dataset)
    return dataset


def _run_on_h1(cluster: Cluster, launcher: str, args: List[str], timeout: float) -> str:
    """`python -m hvd_trainer ARGS` on 4 ranks across h1 and h2; its output (the test fails unless it exits 0)."""
    r = run_job(cluster.on("h1", *horovodrun(launcher, PYTHON, "-m", "hvd_trainer", *args)), timeout=timeout,
                env=cluster.job_env())
    out = strip_rank_prefixes(r.stdout)
    assert r.returncode == 0, f"hvd_trainer {args[0]} exited {r.returncode}:\n{out[-4000:]}"
    return out


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_resume_evaluate_and_predict_work_with_a_private_output_directory_per_host(cluster, launcher, tmp_path):
    """README: results are written by rank 0 only, so --output-directory only needs to exist on h1.

    Every job below runs with an output path that is a separate tmpfs on h1 and on h2 (see
    PrivateDisks): the ranks on h2 find nothing there, and must not need to.
    """
    dataset = _digits_dataset(tmp_path)
    output = str(tmp_path / "private")
    run_dir = os.path.join(output, "multihost_private")
    with PrivateDisks(cluster, output) as disks:
        assert disks.read("h2", ".") is None and not os.listdir(output)
        _run_on_h1(cluster, launcher, TRAIN_COMMAND.format(
            dataset=dataset, output=output, experiment="multihost", model="private").split()[3:], timeout=240)
        first = json.loads(disks.read("h1", "multihost_private/model/training_progress.json"))
        assert first["epoch"] == 3
        assert disks.read("h2", "multihost_private/model/training_progress.json") is None, "h2's disk must stay empty"

        out = _run_on_h1(cluster, launcher, ["train", "--resume", run_dir, "--config",
                                             "hvd_trainer/examples/digits.yaml", "--dataset", dataset,
                                             "--set", "trainer.epochs=5"], timeout=240)
        resumed = json.loads(disks.read("h1", "multihost_private/model/training_progress.json"))
        assert f"Resuming from step {first['steps']}" in out, out[-4000:]
        assert resumed["epoch"] == 5 and resumed["steps"] > first["steps"], (first, resumed)

        out = _run_on_h1(cluster, launcher, ["evaluate", "--model-path", run_dir, "--dataset", dataset,
                                             "--split", "validation"], timeout=180)
        assert "validation" in out and disks.read("h1", "multihost_private/evaluation_statistics.json")
        predictions = os.path.join(output, "predictions")
        _run_on_h1(cluster, launcher, ["predict", "--model-path", run_dir, "--dataset", dataset,
                                       "--output-directory", predictions], timeout=180)
        rows = disks.read("h1", "predictions/predictions.csv").splitlines()
        assert len(rows) == 1798, f"one row per input row, and a header: {len(rows)} lines"
