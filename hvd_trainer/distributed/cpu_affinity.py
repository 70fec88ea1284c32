"""Each CPU rank of a host on cores of its own.

Ranks that share a host's cores and are not bound by their launcher (horovodrun passes
`-bind-to none` to mpirun, and Gloo jobs are plain processes) leave placement to the kernel,
which moves their threads between cores at every wait. On 2 cores, `horovodrun --gloo -np 2`
trained the bench's 200k-row table (10 epochs) in 22.9 s unbound and 16.4 s with each rank on a
core of its own, `horovodrun --mpi -np 2` in 9.8 s and 9.5 s, one process in 12.6 s (issue #16,
2026-12-01, medians of 3 alternating runs; whole process: Gloo 30.0 s and 22.8 s, np=1 18.5 s).

The affinity is set before hvd.init(), on every thread the process has by then, so Horovod's
background thread, Gloo's and torch's threads (started later, they inherit it) run on the
rank's cores too. Linux only: elsewhere nothing is pinned.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Sequence


def share_of_cores(allowed: Sequence[int], local_rank: int, local_size: int) -> List[int]:
    """The cores of local rank `local_rank` among `local_size` ranks sharing `allowed`.

    Consecutive, as even as the count allows (5 cores, 2 ranks: 2 and 3). With more ranks than
    cores (only when the config asks for it), rank r gets core r mod cores.
    """
    cores = sorted(allowed)
    if not cores:
        raise ValueError("no cores to share")
    if local_size > len(cores):
        return [cores[local_rank % len(cores)]]
    start = local_rank * len(cores) // local_size
    end = (local_rank + 1) * len(cores) // local_size
    return cores[start:end]


def _thread_ids() -> List[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # the calling thread


def pin_process(cores: Iterable[int]) -> None:
    """Restrict every thread of this process to `cores` (threads started later inherit it)."""
    cores = set(cores)
    for tid in _thread_ids():
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # the thread ended meanwhile
            pass


def pin_to_local_share(local_rank: int, local_size: int) -> None:
    """Pin this process to local rank `local_rank`'s share (share_of_cores) of the cores it may run on now."""
    if hasattr(os, "sched_setaffinity"):
        pin_process(share_of_cores(os.sched_getaffinity(0), local_rank, local_size))


def process_cores() -> List[int]:
    """The cores any thread of this process may run on (the union over its threads)."""
    if not hasattr(os, "sched_getaffinity"):
        return list(range(os.cpu_count() or 1))
    cores = set()
    for tid in _thread_ids():
        try:
            cores |= os.sched_getaffinity(tid)
        except ProcessLookupError:
            pass
    return sorted(cores)


def format_cores(cores: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5", as Linux's cpu lists read."""
    parts, run = [], []
    for core in sorted(cores):
        if run and core != run[-1] + 1:
            parts.append(_span(run))
            run = []
        run.append(core)
    if run:
        parts.append(_span(run))
    return ",".join(parts)


def _span(run: List[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"
