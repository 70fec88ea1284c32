"""`python -m hvd_trainer doctor`: what every rank sees, in one table printed by rank 0.

It checks the things that break Horovod jobs before any training starts: a Horovod without
PyTorch, an MPI launch with a Horovod built without MPI, ranks that disagree on the world size,
and (under SLURM) an allocation that does not match the ranks Horovod sees.
"""
from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

from hvd_trainer.distributed.cpu_affinity import format_cores, process_cores
from hvd_trainer.distributed.launcher import detect_launcher
from hvd_trainer.distributed.versions import horovod_version
from hvd_trainer.errors import EXIT_INPUT_ERROR, HvdTrainerError


def _versions() -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "horovod": horovod_version() or "not installed"}
    try:
        import mpi4py

        info["mpi4py"] = mpi4py.__version__
        if "mpi4py.MPI" not in sys.modules:
            # Query the library without initialising MPI (allowed before MPI_Init).
            mpi4py.rc.initialize = False
        from mpi4py import MPI

        info["mpi"] = MPI.Get_library_version().strip().splitlines()[0][:60]
    except ImportError:
        info["mpi4py"] = "not installed"
        info["mpi"] = "unknown (no mpi4py)"
    return info


def _horovod_build() -> Dict[str, Any]:
    try:
        import horovod.torch as hvd
    except ImportError as e:
        return {"frameworks": f"PyTorch missing ({e})", "controllers": "", "tensor_ops": "", "torch_ok": False}
    controllers = [n for n, ok in (("MPI", hvd.mpi_built()), ("Gloo", hvd.gloo_built())) if ok]
    ops = [n for n, ok in (("NCCL", hvd.nccl_built()), ("DDL", hvd.ddl_built()), ("CCL", hvd.ccl_built()),
                           ("MPI", hvd.mpi_built()), ("Gloo", hvd.gloo_built())) if ok]
    return {"frameworks": "PyTorch", "controllers": ", ".join(controllers) or "none",
            "tensor_ops": ", ".join(ops) or "none", "torch_ok": True, "mpi_built": bool(hvd.mpi_built())}


def _slurm() -> Optional[Dict[str, str]]:
    if "SLURM_JOB_ID" not in os.environ:
        return None
    keys = ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NODELIST")
    return {k: os.environ.get(k, "") for k in keys}


def collect_rank_info(strategy) -> Dict[str, Any]:
    import torch

    info = _versions()
    info.update(_horovod_build())
    launch = detect_launcher()
    info.update(
        launcher=launch.launcher,
        rank=strategy.rank(),
        size=strategy.size(),
        local_rank=strategy.local_rank(),
        local_size=strategy.local_size(),
        cross_rank=strategy.cross_rank() if hasattr(strategy, "cross_rank") else 0,
        controller=strategy.controller() if hasattr(strategy, "controller") else "none",
        host=socket.gethostname(),
        threads=torch.get_num_threads(),
        cores=format_cores(process_cores()),
        cuda=(f"{torch.cuda.device_count()} GPU(s), {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no"),
        slurm=_slurm(),
        knobs=_knobs(strategy),
        controller_advice=strategy.controller_advice() if hasattr(strategy, "controller_advice") else None,
    )
    return info


def _knobs(strategy) -> Optional[List[str]]:
    """The Horovod knobs this rank was started with, each with its value, source and reason."""
    knobs = getattr(strategy, "knobs", None)
    return knobs.describe() if knobs is not None else None


def format_knobs(infos: List[Dict[str, Any]]) -> List[str]:
    """Rank 0's knobs and why, then any rank whose knobs differ (another host, other cores)."""
    first = infos[0].get("knobs")
    if not first:
        return ["Horovod knobs: none (not a Horovod job)"]
    lines = ["Horovod knobs (rank 0: value [who chose it] why; HOROVOD_* / OMPI_MCA_* in the environment win over "
             "distributed.horovod in the config, which wins over the trainer):"]
    lines += [f"  {line}" for line in first]
    for info in infos[1:]:
        differing = [line for line in info.get("knobs") or [] if line not in first]
        lines += [f"  rank {info['rank']}: {line}" for line in differing]
    if infos[0].get("controller_advice"):
        lines.append(f"  Controller: {infos[0]['controller_advice']}")
    if infos[0].get("controller") == "mpi":
        lines.append("  Open MPI reads OMPI_MCA_* at MPI_Init, which runs after the trainer sets them in each rank; "
                     "a value given at launch (mpirun -mca / -x, or exported) wins.")
    return lines


def find_problems(infos: List[Dict[str, Any]]) -> List[str]:
    """Fix-it sentences for what is wrong across ranks (empty when all is well)."""
    problems = []
    sizes = {i["size"] for i in infos}
    if len(sizes) > 1 or len(infos) != infos[0]["size"]:
        problems.append(
            f"Ranks disagree on the world size ({sorted(sizes)}, {len(infos)} answered): the processes "
            "were started by different launches. Start all ranks with one horovodrun/mpirun/srun command."
        )
    if not all(i["torch_ok"] for i in infos):
        problems.append("Horovod on some rank was built without PyTorch; run 'make setup' to rebuild it against this torch.")
    versions = {(i["torch"], i["horovod"]) for i in infos}
    if len(versions) > 1:
        problems.append(f"Ranks run different torch/horovod versions {sorted(versions)}; install the same environment on every host.")
    slurm = infos[0].get("slurm")
    if slurm and slurm.get("SLURM_NTASKS"):
        try:
            ntasks = int(slurm["SLURM_NTASKS"])
        except ValueError:
            ntasks = None
        if ntasks is not None and ntasks != infos[0]["size"]:
            problems.append(
                f"SLURM allocated {ntasks} task(s) but Horovod sees {infos[0]['size']} rank(s). Launch with "
                "srun, or pass -np $SLURM_NTASKS to mpirun/horovodrun inside the batch script."
            )
    return problems


def format_table(infos: List[Dict[str, Any]]) -> str:
    first = infos[0]
    lines = ["hvd_trainer doctor", ""]
    for key in ("python", "torch", "horovod", "mpi", "mpi4py", "frameworks", "controllers", "tensor_ops", "launcher", "controller"):
        lines.append(f"  {key:<12} {first.get(key)}")
    if first.get("slurm"):
        s = first["slurm"]
        lines.append(f"  {'slurm':<12} job {s['SLURM_JOB_ID']}, {s['SLURM_JOB_NUM_NODES']} node(s), "
                     f"{s['SLURM_NTASKS']} task(s), {s['SLURM_NTASKS_PER_NODE']} per node ({s['SLURM_JOB_NODELIST']})")
    lines.append("")
    header = ("rank", "size", "local_rank", "local_size", "cross_rank", "host", "threads", "cores", "cuda")
    rows = [tuple(str(i[h]) for h in header) for i in infos]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
    lines += [""] + format_knobs(infos)
    return "\n".join(lines)


def run_doctor(strategy_name: str = "auto") -> Tuple[int, str]:
    """Returns (exit code, text printed on rank 0)."""
    from hvd_trainer.distributed import init_dist_strategy

    try:
        strategy = init_dist_strategy(strategy_name)
    except HvdTrainerError as e:
        return EXIT_INPUT_ERROR, f"hvd_trainer doctor: {e}"
    infos = strategy.allgather_object(collect_rank_info(strategy), name="hvd_trainer.doctor")
    if not strategy.is_coordinator():
        return 0, ""
    text = format_table(infos)
    problems = find_problems(infos)
    if problems:
        text += "\n\nProblems:\n" + "\n".join(f"  - {p}" for p in problems)
        return 1, text
    return 0, text + "\n\nAll ranks OK."


def run_preflight(hosts: str, network_interface: Optional[str] = None, ssh_port: Optional[int] = None,
                  ssh_identity_file: Optional[str] = None) -> Tuple[int, str]:
    """`doctor --hosts`: check a multi-host launch before horovodrun tries it."""
    from hvd_trainer.preflight import check_hosts, parse_hosts

    names = parse_hosts(hosts)
    problems = check_hosts(names, network_interface, ssh_port=ssh_port, ssh_identity_file=ssh_identity_file)
    if problems:
        return 1, "hvd_trainer doctor --hosts: problems found:\n" + "\n".join(f"  - {p}" for p in problems)
    return 0, f"hvd_trainer doctor --hosts: {', '.join(names)} look ready for horovodrun."
