"""The Docker compose cluster (docker/): static checks everywhere, the real thing where an engine runs.

As root, the test starts a private engine (scripts/docker_engine_up.sh: installs Debian's docker.io
and docker-compose when missing; own socket and data root, no default bridge, no iptables, no IP
forwarding), makes the Debian base image locally (scripts/docker_base_image.sh, cached), builds
the image offline from the wheels this machine already has (docker/stage_wheels.sh), brings the
compose cluster up on its internal network, runs the job, checks its output and brings it down.
Only where no engine can run at all (not root; no namespaces or cgroups) are the compose file,
the Dockerfile and the scripts validated statically alone, and the skip message says why the
cluster was not run. On a fresh quiet 2-core machine the module takes about 4 minutes (install,
debootstrap, image build, three cluster runs) plus the elastic run that `up --scale` grows (50 s
to 3 minutes, with the machine's load); the base root file system, the dependency wheels and the
engine's images are cached under ~/.cache/hvd_trainer/docker for later runs.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

from conftest import REPO, finish_job
from test_elastic_multihost import assert_resized_and_complete

# On a fresh machine the first cluster test also installs Docker, builds the base image and the
# image: about 3 minutes on a quiet 2-core machine (install 10 s, debootstrap 60 s, wheels and
# image 115 s), but 20 minutes on one shared by a load of 16: more than the suite's 600 s.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

DOCKER_DIR = os.path.join(REPO, "docker")
COMPOSE_FILE = os.path.join(DOCKER_DIR, "docker-compose.yml")
DOCKERFILE = os.path.join(DOCKER_DIR, "Dockerfile")
SCRIPTS = os.path.join(REPO, "scripts")
BASE_IMAGE = "hvd-trainer-base:bookworm"
TEST_IMAGE = "hvd-trainer:test"
# The digits example across the workers (what HVD_JOB is set to for training); few epochs.
TRAIN_JOB = ("python -m hvd_trainer train --config hvd_trainer/examples/digits.yaml --dataset /shared/digits.csv "
             "--output-directory /shared/results --experiment-name digits --model-name compose "
             "--set trainer.epochs=3")
CONTEXT_FILES = ("setup.py", "README.md")
CONTEXT_DOCKER_FILES = ("Dockerfile", "install.sh", "entrypoint.sh")
CONTEXT_DIRS = ("hvd_trainer", "scripts/elastic")


def run(cmd: List[str], timeout: float, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """Run cmd in its own process group; on timeout kill the whole group and fail."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                            cwd=cwd or REPO, start_new_session=True)
    out = finish_job(proc, timeout, " ".join(cmd))
    if check and proc.returncode != 0:
        pytest.fail(f"Failed ({proc.returncode}): {' '.join(cmd)}\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def compose_command() -> Optional[List[str]]:
    """docker-compose (v1, Debian's) or the `docker compose` plugin (v2), whichever exists."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return ["docker", "compose"]
    return None


# ---- static checks (no engine needed) -------------------------------------------------------


def _compose_model() -> dict:
    """The compose file as the compose CLI resolves it (or as plain YAML without a CLI)."""
    cli = compose_command()
    if cli is None:
        with open(COMPOSE_FILE) as f:
            return yaml.safe_load(f)
    r = run(cli + ["-f", COMPOSE_FILE, "config"], timeout=60, env={"HVD_SHARED_DIR": "/tmp/hvd-shared-static"})
    assert r.returncode == 0, f"'{' '.join(cli)} config' rejects docker/docker-compose.yml:\n{r.stdout}"
    return yaml.safe_load(r.stdout)


def test_compose_file_has_a_launcher_and_workers_on_an_internal_network():
    model = _compose_model()
    services = model["services"]
    assert set(services) == {"launcher", "worker"}
    network = model["networks"]["cluster"]
    assert network.get("internal") is True, "the cluster network must have no route out"
    for name, service in services.items():
        assert "cluster" in (service.get("networks") or {}), name
        assert service.get("dns") == ["127.0.0.1"], f"{name}: only the cluster's own names may resolve"
        volumes = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in service["volumes"]]
        assert any(v.startswith("ssh-keys:") and ":/keys" in v for v in volumes), f"{name}: the key volume"
    assert services["worker"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["launcher"]["command"] == ["launcher"] and services["worker"]["command"] == ["worker"]
    env = services["launcher"]["environment"]
    assert "HVD_JOB" in env, "the job is one variable, so switching it to training is one line"
    assert {"HVD_MIN_NP", "HVD_MAX_NP"} <= set(env), "an elastic job is switched on from the environment"


def test_the_image_holds_the_discovery_script_where_the_launcher_runs_it():
    dockerfile = open(DOCKERFILE).read()
    entrypoint = open(os.path.join(DOCKER_DIR, "entrypoint.sh")).read()
    copied = re.search(r"^COPY scripts/elastic/ (\S+)/$", dockerfile, re.M)
    assert copied, "the Dockerfile must copy scripts/elastic/ into the image"
    assert f"{copied.group(1)}/discover_hosts_compose.sh" in entrypoint


def test_dockerfile_pins_torch_builds_horovod_like_setup_and_bakes_no_key():
    text = open(DOCKERFILE).read()
    install = open(os.path.join(DOCKER_DIR, "install.sh")).read()
    assert re.search(r"^ARG TORCH_SPEC=torch==\d+\.\d+\.\d+$", text, re.M), "torch must be pinned"
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and "FROM ${BASE_IMAGE}" in text
    assert 'ENTRYPOINT ["/usr/local/bin/hvd-entrypoint"]' in text
    # Horovod built as scripts/setup.sh builds it, when no wheel is given.
    for flag in ("HOROVOD_WITH_PYTORCH=1", "HOROVOD_WITH_GLOO=1", "HOROVOD_WITH_MPI=1", "-std=c++17"):
        assert flag in install, flag
    # No key material in the image: nothing generated at build time, host keys removed.
    assert "ssh-keygen" not in text and "ssh-keygen" not in install
    assert "rm -f /etc/ssh/ssh_host_*" in install
    assert not re.search(r"^(COPY|ADD)\s.*(id_|\.pem|ssh_host)", text, re.M)


@pytest.mark.parametrize("script", [
    "docker/entrypoint.sh", "docker/install.sh", "docker/stage_wheels.sh",
    "scripts/docker_engine_up.sh", "scripts/docker_engine_down.sh", "scripts/docker_base_image.sh",
    "scripts/elastic/discover_hosts_compose.sh",
])
def test_shell_scripts_parse(script):
    r = run(["bash", "-n", os.path.join(REPO, script)], timeout=30)
    assert r.returncode == 0, r.stdout


# ---- the real cluster -----------------------------------------------------------------------


CANNOT_RUN = "This machine cannot run containers"  # docker_engine_up.sh's words for a machine without namespaces/cgroups


@pytest.fixture(scope="module")
def engine():
    """DOCKER_HOST of a usable engine: the one in $DOCKER_HOST if it answers, else a private one
    started (and, at the end, stopped) here by scripts/docker_engine_up.sh, which installs
    Debian's docker.io and docker-compose when they are missing. The cluster is skipped only
    where no engine can run at all (not root; no namespaces or cgroups), with that reason."""
    if os.environ.get("DOCKER_HOST") and shutil.which("docker") and compose_command() \
            and run(["docker", "info"], timeout=30).returncode == 0:
        yield {"DOCKER_HOST": os.environ["DOCKER_HOST"]}
        return
    if os.geteuid() != 0:
        pytest.skip("Docker cluster not run: a private Docker engine needs root (run the tests as root, or export "
                    "DOCKER_HOST of an engine you can use). The compose file, Dockerfile and scripts were only "
                    "validated statically.")
    state = os.environ.get("HVD_DOCKER_STATE", "/tmp/hvd_trainer_docker")
    env = {"DOCKER_HOST": f"unix://{state}/docker.sock"}
    was_up = shutil.which("docker") is not None and run(["docker", "version"], timeout=30, env=env).returncode == 0
    r = run(["bash", os.path.join(SCRIPTS, "docker_engine_up.sh")], timeout=900)
    if r.returncode != 0 and CANNOT_RUN in r.stdout:
        reason = r.stdout[r.stdout.index(CANNOT_RUN):].strip().splitlines()[0]
        pytest.skip(f"Docker cluster not run: {reason} The compose file, Dockerfile and scripts were only "
                    "validated statically.")
    assert r.returncode == 0, f"scripts/docker_engine_up.sh failed:\n{r.stdout[-4000:]}"
    print(r.stdout)
    yield env
    if not was_up:
        run(["bash", os.path.join(SCRIPTS, "docker_engine_down.sh")], timeout=180)


def _stage_context(root: str) -> None:
    """A clean build context: the package, the docker files and every wheel (no network needed)."""
    for name in CONTEXT_FILES:
        shutil.copy2(os.path.join(REPO, name), root)
    for name in CONTEXT_DIRS:
        shutil.copytree(os.path.join(REPO, name), os.path.join(root, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.makedirs(os.path.join(root, "docker", "wheels"))
    for name in CONTEXT_DOCKER_FILES:
        shutil.copy2(os.path.join(DOCKER_DIR, name), os.path.join(root, "docker"))
    # The wheels of the virtualenv running these tests (the worktree may have no .venv of its own).
    run(["bash", os.path.join(DOCKER_DIR, "stage_wheels.sh"), os.path.join(root, "docker", "wheels")],
        timeout=600, env={"HVD_TRAINER_VENV": sys.prefix}, check=True)


def _context_digest(root: str) -> str:
    """What the image is built from: every file's path and bytes (wheels: name and size, whose
    names carry their versions), so that an unchanged context is never built again."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(f"{os.path.relpath(path, root)} {os.path.getsize(path)}\n".encode())
            if not name.endswith(".whl"):
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory):
    run(["bash", os.path.join(SCRIPTS, "docker_base_image.sh")], timeout=900, env=engine, check=True)
    context = str(tmp_path_factory.mktemp("docker-context"))
    _stage_context(context)
    label = f"hvd_trainer.context={_context_digest(context)}"
    built = run(["docker", "image", "inspect", "-f", '{{ index .Config.Labels "hvd_trainer.context" }}', TEST_IMAGE],
                timeout=60, env=engine)
    if built.returncode == 0 and f"hvd_trainer.context={built.stdout.strip()}" == label:
        print(f"{TEST_IMAGE} is up to date ({label}); not rebuilt.")
        shutil.rmtree(context, ignore_errors=True)
        return TEST_IMAGE
    # The build has no network at all: everything comes from the base image and the wheels.
    build = ["docker", "build", "--network", "none", "-f", os.path.join(context, "docker", "Dockerfile"),
             "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", "OFFLINE=1"]
    build_env = dict(engine, DOCKER_BUILDKIT="0")
    # The build stage is tagged, so that removing the images older builds left untagged below
    # keeps its layers: the next run reuses them instead of reinstalling torch and Horovod.
    run(build + ["--target", "build", "-t", f"{TEST_IMAGE}-build", context], timeout=900, env=build_env, check=True)
    run(build + ["--label", label, "-t", TEST_IMAGE, context], timeout=900, env=build_env, check=True)
    run(["docker", "image", "prune", "-f"], timeout=300, env=engine)
    shutil.rmtree(context, ignore_errors=True)
    return TEST_IMAGE


def _doctor_rows(out: str) -> List[List[str]]:
    rows = []
    for line in out.splitlines():
        line = re.sub(r"^.*?\|\s?", "", line)            # compose's "launcher_1  | " prefix
        line = re.sub(r"^\[[0-9,]+\]<stdout>:", "", line)  # horovodrun's rank tag
        if re.match(r"^\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+\S+\s+\d+\s+\S+\s+\S+\s*$", line):
            rows.append(line.split())
    return rows


def compose_project(engine, image, shared, controller: str, name: str, job: Optional[str] = None,
                    **settings: str) -> Tuple[List[str], Dict[str, str]]:
    """The compose command line of a cluster of our own (project `name`) and its environment."""
    project = f"hvdt{os.getpid()}{name}"
    env = dict(engine, HVD_IMAGE=image, HVD_SHARED_DIR=str(shared), HVD_CONTROLLER=controller,
               COMPOSE_PROJECT_NAME=project, **settings)
    if job:
        env["HVD_JOB"] = job
    return compose_command() + ["-f", COMPOSE_FILE, "-p", project], env


def compose_up(engine, image, shared, controller: str, workers: int, job: Optional[str] = None) -> str:
    """`up` the cluster until the launcher ends, then `down -v`; returns the (colourless) log."""
    base, env = compose_project(engine, image, shared, controller, f"{controller}{workers}", job)
    try:
        r = run(base + ["up", "--no-build", "--scale", f"worker={workers}", "--exit-code-from", "launcher"],
                timeout=600, env=env)
    finally:
        down = run(base + ["down", "-v", "--remove-orphans", "-t", "5"], timeout=180, env=env)
        assert down.returncode == 0, down.stdout
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert r.returncode == 0, out[-6000:]
    assert f"horovodrun -np {workers} " in out, out[-6000:]
    return out


@pytest.mark.parametrize("controller, workers", [("gloo", 2), ("mpi", 3)])
def test_compose_cluster_runs_doctor_across_the_workers(engine, image, controller, workers, tmp_path):
    # The default job trains the digits example (tested below); doctor shows every rank.
    out = compose_up(engine, image, tmp_path, controller, workers, job="python -m hvd_trainer doctor")
    assert "All ranks OK." in out, out[-6000:]
    rows = _doctor_rows(out)
    assert len(rows) == workers, out[-6000:]
    header = ["rank", "size", "local_rank", "local_size", "cross_rank", "host", "threads", "cores", "cuda"]
    host = header.index("host")
    assert len({row[host] for row in rows}) == workers, "one rank on each worker, each with its own hostname"
    assert all(row[2] == "0" and row[3] == "1" for row in rows), rows
    assert sorted(int(row[4]) for row in rows) == list(range(workers)), "cross_rank numbers the hosts"
    assert f"controller   {controller}" in out


def test_compose_cluster_trains_the_digits_example(engine, image, tmp_path):
    compose_up(engine, image, tmp_path, "gloo", 2, job=TRAIN_JOB)
    run_dir = tmp_path / "results" / "digits_compose"
    for name in ("description.json", "training_statistics.json", "model/model_hyperparameters.json",
                 "model/training_progress.json", "model/training_checkpoints/latest.ckpt",
                 "model/training_checkpoints/best.ckpt"):
        assert (run_dir / name).exists(), f"{name} is missing under {run_dir}"


# ---- elastic: the compose cluster grows during a run ---------------------------------------------


# The digits example, committing every 2 steps: an added worker is taken in within 2 steps of the discovery
# script listing it. Measured on this 2-core machine under load: 10 steps per epoch on 2 workers at about
# 3 steps/s, and the third worker noticed about 6 s after the first evaluation (compose's `up --scale` 2 s,
# the container's sshd, the script's next poll), taken in at step 32 in every run so far: 10 epochs (100
# steps on 2 workers) leave about 4 times the time that needs.
ELASTIC_EPOCHS = 10
ELASTIC_JOB = ("python -m hvd_trainer train --config hvd_trainer/examples/digits.yaml --dataset /shared/digits.csv "
               "--output-directory /shared/results --experiment-name digits --model-name elastic "
               f"--set trainer.epochs={ELASTIC_EPOCHS} --set distributed.elastic_commit_steps=2")
EVALUATION_LINE = re.compile(r"step \d+/\d+ epoch \d+ \|")  # rank 0's console line per evaluation


class DetachedCluster:
    """A compose cluster started with `up -d`: scaled while its launcher runs, read through `docker logs`."""

    def __init__(self, engine, base: List[str], env: Dict[str, str]):
        self.engine, self.base, self.env = engine, base, env
        self.launcher = ""

    def scale_workers(self, workers: int) -> None:
        """`up -d --no-recreate --scale worker=N worker`: add replicas, leave every running container alone."""
        run(self.base + ["up", "-d", "--no-build", "--no-recreate", "--scale", f"worker={workers}", "worker"],
            timeout=300, env=self.env, check=True)

    def start(self, workers: int) -> None:
        run(self.base + ["up", "-d", "--no-build", "--scale", f"worker={workers}"], timeout=300, env=self.env,
            check=True)
        ids = run(self.base + ["ps", "-q", "launcher"], timeout=120, env=self.env, check=True).stdout.split()
        assert len(ids) == 1, ids
        self.launcher = ids[0]

    def log(self) -> str:
        return run(["docker", "logs", self.launcher], timeout=120, env=self.engine).stdout

    def running(self) -> bool:
        state = run(["docker", "inspect", "-f", "{{.State.Running}}", self.launcher], timeout=120, env=self.engine)
        return state.stdout.strip() == "true"

    def wait_for_evaluations(self, count: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while len(EVALUATION_LINE.findall(self.log())) < count:
            if not self.running() or time.monotonic() > deadline:
                raise AssertionError(f"{count} evaluation(s) never happened:\n{self.log()[-6000:]}")
            time.sleep(1)

    def wait(self, timeout: float = 600) -> int:
        """The launcher's exit status (the job's) once it ends."""
        r = run(["docker", "wait", self.launcher], timeout=timeout, env=self.engine, check=True)
        return int(r.stdout.strip().splitlines()[-1])

    def down(self) -> None:
        down = run(self.base + ["down", "-v", "--remove-orphans", "-t", "5"], timeout=180, env=self.env)
        assert down.returncode == 0, down.stdout


@pytest.mark.parametrize("settings, cause", [
    ({"HVD_MAX_NP": "3", "HVD_CONTROLLER": "mpi"}, "needs HVD_CONTROLLER=gloo"),
    ({"HVD_MAX_NP": "three"}, "must be whole numbers of ranks"),
])
def test_the_launcher_refuses_elastic_settings_it_cannot_run_before_waiting(engine, image, settings, cause):
    options = [arg for name, value in settings.items() for arg in ("-e", f"{name}={value}")]
    r = run(["docker", "run", "--rm", "--network", "none", *options, image, "launcher"], timeout=120, env=engine)
    assert r.returncode == 1, r.stdout
    assert cause in r.stdout and "Waiting for the workers" not in r.stdout, r.stdout


def test_scaling_the_workers_up_grows_an_elastic_run(engine, image, tmp_path):
    # An elastic job (HVD_MAX_NP) on 2 workers; after its first evaluation a third replica is added with
    # `up --scale worker=3`, which the shipped discovery script (discover_hosts_compose.sh) lists.
    base, env = compose_project(engine, image, tmp_path, "gloo", "elastic", ELASTIC_JOB, HVD_MIN_NP="2",
                                HVD_MAX_NP="3")
    cluster = DetachedCluster(engine, base, env)
    try:
        cluster.start(workers=2)
        cluster.wait_for_evaluations(1)
        cluster.scale_workers(3)
        rc = cluster.wait()
        out = cluster.log()
    finally:
        cluster.down()
    assert rc == 0, out[-6000:]
    assert "horovodrun -np 2 --min-np 2 --max-np 3 --host-discovery-script" in out, out[-6000:]
    assert_resized_and_complete(out, 2, 3, str(tmp_path / "results" / "digits_elastic"), ELASTIC_EPOCHS)
