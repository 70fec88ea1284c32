"""Who am I: which launcher started this process, read from its environment variables.

Kept apart from the strategies ("how do we talk"): this module imports nothing heavy and
never initialises a communication library, so `doctor` and auto-detection can use it freely.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

HOROVODRUN = "horovodrun"
MPIRUN = "mpirun"
SRUN = "srun"
NONE = "none"


@dataclass(frozen=True)
class LaunchInfo:
    """What the launcher says about this process. Values the launcher does not give are None."""

    launcher: str
    rank: Optional[int] = None
    size: Optional[int] = None
    local_rank: Optional[int] = None
    controller: Optional[str] = None  # "gloo" or "mpi" when known
    local_size: Optional[int] = None  # ranks on this host, known before hvd.init()

    @property
    def is_distributed(self) -> bool:
        return self.launcher != NONE

    @property
    def uses_mpi(self) -> bool:
        """True when MPI started the processes, so Horovod must use its MPI controller."""
        return self.controller == "mpi"


def _int(env: Mapping[str, str], *names: str) -> Optional[int]:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                return None
    return None


def detect_launcher(env: Optional[Mapping[str, str]] = None) -> LaunchInfo:
    """Read the launcher from the environment.

    Order matters: horovodrun's Gloo mode sets HOROVOD_RANK; horovodrun's MPI mode and plain
    mpirun set OMPI_COMM_WORLD_RANK (Open MPI) or PMI_RANK (MPICH, Intel MPI); srun sets
    PMIX_RANK with --mpi=pmix and SLURM_STEP_NUM_TASKS for every job step. SLURM_PROCID alone
    is not trusted: a batch script's own shell has SLURM_PROCID=0 and SLURM_NTASKS>1, and so
    does every rank that horovodrun or mpirun starts inside it.
    """
    env = os.environ if env is None else env
    if "HOROVOD_RANK" in env and "HOROVOD_SIZE" in env:
        controller = env.get("HOROVOD_CONTROLLER", "gloo").lower()
        return LaunchInfo(
            HOROVODRUN,
            rank=_int(env, "HOROVOD_RANK"),
            size=_int(env, "HOROVOD_SIZE"),
            local_rank=_int(env, "HOROVOD_LOCAL_RANK"),
            controller="mpi" if controller == "mpi" else "gloo",
            local_size=_int(env, "HOROVOD_LOCAL_SIZE"),
        )
    if "OMPI_COMM_WORLD_RANK" in env:
        # Plain mpirun, or horovodrun --mpi (which is mpirun underneath and marks nothing).
        return LaunchInfo(
            MPIRUN,
            rank=_int(env, "OMPI_COMM_WORLD_RANK"),
            size=_int(env, "OMPI_COMM_WORLD_SIZE"),
            local_rank=_int(env, "OMPI_COMM_WORLD_LOCAL_RANK"),
            controller="mpi",
            local_size=_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"),
        )
    if "SLURM_STEP_NUM_TASKS" in env and (_int(env, "SLURM_STEP_NUM_TASKS") or 0) > 1:
        return LaunchInfo(
            SRUN,
            rank=_int(env, "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"),
            size=_int(env, "SLURM_STEP_NUM_TASKS"),
            local_rank=_int(env, "SLURM_LOCALID"),
            controller="mpi",
            local_size=_slurm_tasks_on_this_node(env),
        )
    if "PMIX_RANK" in env or "PMI_RANK" in env:
        return LaunchInfo(
            MPIRUN,
            rank=_int(env, "PMIX_RANK", "PMI_RANK"),
            size=_int(env, "PMI_SIZE", "MPI_LOCALNRANKS"),
            local_rank=_int(env, "MPI_LOCALRANKID", "PALS_LOCAL_RANKID"),
            controller="mpi",
            local_size=_int(env, "MPI_LOCALNRANKS", "PALS_LOCAL_SIZE"),
        )
    return LaunchInfo(NONE, rank=0, size=1, local_rank=0, local_size=1)


def _slurm_tasks_on_this_node(env: Mapping[str, str]) -> Optional[int]:
    """This node's entry of SLURM_STEP_TASKS_PER_NODE ("2(x3),1": two tasks on each of the first
    three nodes, one on the fourth), found by SLURM_NODEID."""
    spec, node = env.get("SLURM_STEP_TASKS_PER_NODE", ""), _int(env, "SLURM_NODEID")
    if not spec or node is None:
        return None
    counts = []
    for part in spec.split(","):
        tasks, _, repeat = part.partition("(x")
        try:
            counts += [int(tasks)] * (int(repeat.rstrip(")")) if repeat else 1)
        except ValueError:
            return None
    return counts[node] if 0 <= node < len(counts) else None
