"""Shared test helpers: launching real horovodrun / mpirun jobs with a hard timeout."""
import os
import signal
import subprocess
import sys
from typing import List, Optional

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
HOROVODRUN = os.path.join(BIN, "horovodrun")
WORKERS = os.path.join(REPO, "tests", "workers")


def launch_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
        # Ranks share 2 cores with Horovod's busy-polling background threads: yield when idle.
        OMPI_MCA_mpi_yield_when_idle="1",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def launcher_command(launcher: str, np: int) -> List[str]:
    """The command prefix that starts `np` ranks of sys.executable with the given launcher."""
    if launcher == "gloo":
        return [HOROVODRUN, "-np", str(np), "-H", f"localhost:{np}", "--gloo", "--disable-cache", sys.executable]
    if launcher == "horovodrun-mpi":
        return [HOROVODRUN, "-np", str(np), "-H", f"localhost:{np}", "--mpi", "--disable-cache", sys.executable]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(np), "--oversubscribe", "--bind-to", "none", "-x", "PYTHONPATH", "-x", "PATH", sys.executable]
    if launcher == "local":
        return [sys.executable]
    raise ValueError(launcher)


def start_job(cmd: List[str], env: Optional[dict] = None, cwd: Optional[str] = None) -> subprocess.Popen:
    """Start cmd in its own process group, so that finish_job can kill every rank it started."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=launch_env(env), cwd=cwd or REPO, start_new_session=True)


def finish_job(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """Its output; on timeout kill the whole process group (no stray ranks) and fail the test."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"Timed out after {timeout:.0f} s: {what}\n{out[-4000:]}")
    return out


def run_job(cmd: List[str], timeout: float = 180, env: Optional[dict] = None, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run cmd to the end (see start_job / finish_job)."""
    proc = start_job(cmd, env, cwd)
    out = finish_job(proc, timeout, " ".join(cmd))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def require_horovod():
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        pytest.skip("Horovod is not installed; run 'make setup'.")


@pytest.fixture
def horovod():
    require_horovod()
