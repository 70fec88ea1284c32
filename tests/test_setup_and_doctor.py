"""Installation and launch problems get a clear fix-it message: setup, the Horovod build, doctor."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, launch_env, launcher_command, require_horovod, run_job

from hvd_trainer.distributed.cpu_affinity import format_cores, share_of_cores
from hvd_trainer.doctor import find_problems


@pytest.mark.parametrize("launcher", ["gloo", "horovodrun-mpi", "mpirun"])
def test_doctor_prints_every_rank(launcher):
    require_horovod()
    r = run_job(launcher_command(launcher, 2) + ["-m", "hvd_trainer", "doctor"], timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "All ranks OK." in r.stdout
    assert "PyTorch" in r.stdout and "MPI, Gloo" in r.stdout
    table = [line.split(":", 1)[-1].split() for line in r.stdout.splitlines() if line.split(":", 1)[-1].strip()[:2] in ("0 ", "1 ")]
    assert [row[:4] for row in table] == [["0", "2", "0", "2"], ["1", "2", "1", "2"]]
    assert ("controller   gloo" in r.stdout) == (launcher == "gloo")
    # Two CPU ranks on one host, not bound by the launcher: each runs on its own share of the cores,
    # every thread (Horovod's and Gloo's included: the column is the union over the process's threads).
    allowed = os.sched_getaffinity(0)
    if len(allowed) >= 2:
        assert [row[7] for row in table] == [format_cores(share_of_cores(allowed, r, 2)) for r in (0, 1)], table


def _info(rank, size, **extra):
    base = {"rank": rank, "size": size, "torch_ok": True, "torch": "2.13", "horovod": "0.28.1", "slurm": None}
    base.update(extra)
    return base


def test_doctor_flags_ranks_that_disagree_on_the_world_size():
    problems = find_problems([_info(0, 2), _info(1, 3)])
    assert problems and "disagree on the world size" in problems[0]


def test_doctor_flags_a_slurm_allocation_that_horovod_does_not_see():
    slurm = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "1"}
    problems = find_problems([_info(0, 2, slurm=slurm), _info(1, 2, slurm=slurm)])
    assert problems and "SLURM allocated 4 task(s) but Horovod sees 2" in problems[0]


def test_doctor_flags_a_horovod_without_pytorch():
    problems = find_problems([_info(0, 1, torch_ok=False)])
    assert problems and "built without PyTorch" in problems[0]


def test_a_horovod_without_pytorch_support_gets_a_rebuild_message(tmp_path):
    # A horovod package whose PyTorch extension was not built: `import horovod.torch` fails.
    fake = tmp_path / "horovod"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '0.28.1'\n")
    (fake / "torch").mkdir()
    (fake / "torch" / "__init__.py").write_text("raise ImportError('libhorovod_torch.so: cannot open shared object')\n")
    code = "from hvd_trainer.cli import main; raise SystemExit(main(['doctor', '--strategy', 'horovod']))"
    env = launch_env({"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 2
    assert "built without PyTorch support" in r.stdout and "make setup" in r.stdout


def test_an_mpi_launch_with_a_horovod_built_without_mpi_is_explained():
    require_horovod()
    # The installed Horovod has MPI; its build flag is switched off in the worker to stand for
    # a Gloo-only build (building a second Horovod just for this test would take minutes).
    code = ("import horovod.torch as hvd; hvd.mpi_built = lambda: False; "
            "from hvd_trainer.cli import main; raise SystemExit(main(['doctor']))")
    r = run_job(launcher_command("mpirun", 2) + ["-c", code], timeout=120)
    assert r.returncode != 0
    assert r.stdout.count("built without MPI support") == 2 and "horovodrun --gloo" in r.stdout


def test_setup_without_mpi_and_without_root_says_what_to_install():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to drop to an unprivileged user) and setpriv")
    import pathlib
    import tempfile

    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="hvd_setup_test_"))  # pytest's tmp is root-only
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "date", "id", "env"):  # a PATH with no MPI on it
        os.symlink(shutil.which(tool), bin_dir / tool)
    repo_copy = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "scripts"), repo_copy / "scripts")
    os.chmod(tmp_path, 0o755)
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(bin_dir / "env"),
                            f"PATH={bin_dir}", "HOME=/tmp", "bash", str(repo_copy / "scripts" / "setup.sh")],
                           capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert r.returncode == 1
    assert "No MPI implementation was found" in r.stderr and "apt-get install openmpi-bin libopenmpi-dev" in r.stderr
