"""Horovod's knobs, chosen before hvd.init() from what this process can see.

Horovod reads its settings (HOROVOD_CYCLE_TIME, HOROVOD_FUSION_THRESHOLD, ...) from the
environment once, when hvd.init() starts its background thread, and Open MPI reads its MCA
parameters (OMPI_MCA_*) when MPI_Init runs. Their defaults suit GPU jobs: a 1 ms negotiation
cycle and MPI ranks that spin while they wait. On CPUs, with ranks sharing a host's cores, the
same defaults made `horovodrun -np 2` on one 2-core machine slower than one process (issue #16).

`choose_knobs` is pure: it gets the ranks per host, the cores, the controller, the GPUs, the
`distributed.horovod` section and the environment, and returns every value with the reason for
it. Precedence, per knob: a variable already in the environment (set by the user or the
launcher) > the config > the trainer's own choice > Horovod's or MPI's default (value None).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from hvd_trainer.config import HorovodConfig

ENVIRONMENT = "environment"
CONFIG = "config"
TRAINER = "trainer"
DEFAULT = "default"

#: Cycle time for CPU ranks under MPI, in ms; Horovod's own default is 1 ms. Measured on 2 cores, np=2, ranks
#: pinned (2026-12-01, benchmarks/results/step_events/cycle_time.txt): the CLI trained the 200k-row table 4-8%
#: faster at 0.03 than at 0.1 in every one of 3 alternating rounds; the bare loop was the same at 0.01-0.03 and
#: slower at 0.05-0.2; the 1.1M-parameter MLP was within 1% at 0.03 and 0.1.
CPU_CYCLE_TIME_MS = 0.03
#: The trainer's own variable for distributed.horovod.cpu_affinity (1: pin, 0: leave to the kernel).
CPU_AFFINITY_VARIABLE = "HVD_TRAINER_CPU_AFFINITY"
#: A rank wants two busy threads (torch's compute and Horovod's background loop) to itself.
CORES_PER_RANK_WITHOUT_SHARING = 2
#: The transports horovodrun's mpirun command gives Open MPI (`-mca btl ^openib`), which ranks see in their environment.
HOROVODRUN_BTL = "^openib"

KnobChoice = Tuple[Optional[str], str]


@dataclass(frozen=True)
class Knob:
    """One setting: the variable that carries it, its value (None: not set, so Horovod's, MPI's or
    torch's own default holds), who chose it (environment, config, trainer, default) and why."""

    variable: str
    value: Optional[str]
    source: str
    reason: str

    def describe(self) -> str:
        shown = self.value if self.value is not None else "(not set)"
        return f"{self.variable}={shown} [{self.source}] {self.reason}"


@dataclass(frozen=True)
class HostView:
    """What one rank sees of its host before hvd.init().

    cores is the number of cores this rank may run on. pinned is True when the launcher bound
    the rank to those cores (its affinity is smaller than the machine), so they are its own
    rather than shared by all the host's ranks.
    """

    local_size: int
    cores: int
    controller: Optional[str]
    gpu: bool
    pinned: bool = False
    local_rank: Optional[int] = None
    elastic: bool = False
    size: Optional[int] = None  # ranks in the job, when the launcher says so before init

    @property
    def one_host(self) -> bool:
        """Whether every rank of the job runs on this host (False when the launcher did not say)."""
        return self.size is not None and self.size == self.local_size

    @property
    def cores_per_rank(self) -> float:
        return float(self.cores) if self.pinned else self.cores / max(1, self.local_size)

    def describe(self) -> str:
        cores = f"{self.cores} core(s) pinned to this rank" if self.pinned else f"{self.cores} core(s)"
        return f"{self.local_size} rank(s) on this host, {cores}"


@dataclass(frozen=True)
class Knobs:
    """Every knob the trainer sets or leaves, with its reason."""

    cycle_time: Knob
    fusion_threshold: Knob
    yield_when_idle: Knob
    autotune: Knob
    autotune_log: Knob
    timeline: Knob
    timeline_mark_cycles: Knob
    torch_threads: Knob
    cpu_affinity: Knob
    mpi_transports: Knob

    def all(self) -> Tuple[Knob, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def environment(self) -> Dict[str, str]:
        """The variables to export before hvd.init(): those chosen by the config or the trainer.

        torch's thread count is applied with torch.set_num_threads instead: torch has read
        OMP_NUM_THREADS by the time the strategy runs; the CPU affinity is the trainer's own.
        """
        own = (self.torch_threads.variable, self.cpu_affinity.variable)
        return {k.variable: k.value for k in self.all()
                if k.variable not in own and k.value is not None and k.source in (CONFIG, TRAINER)}

    def pins_cores(self) -> bool:
        """Whether this rank is to run on cores of its own (distributed/cpu_affinity.py)."""
        return self.cpu_affinity.value == "1"

    def threads_to_set(self) -> Optional[int]:
        """The torch thread count to set, or None to leave torch's (OMP_NUM_THREADS, or its default)."""
        knob = self.torch_threads
        return int(knob.value) if knob.value is not None and knob.source in (CONFIG, TRAINER) else None

    def describe(self) -> List[str]:
        return [k.describe() for k in self.all()]


def _pick(variable: str, environ: Mapping[str, str], configured: Optional[str], config_key: str,
          trainer: Callable[[], KnobChoice]) -> Knob:
    """The environment wins over the config, which wins over the trainer's choice."""
    if environ.get(variable, "") != "":
        return Knob(variable, environ[variable], ENVIRONMENT, "set in the environment, which wins over the config")
    if configured is not None:
        return Knob(variable, configured, CONFIG, f"distributed.horovod.{config_key} in the config")
    value, reason = trainer()
    return Knob(variable, value, TRAINER if value is not None else DEFAULT, reason)


def _number(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value:g}"


def _mib_to_bytes(value: Optional[float]) -> Optional[str]:
    return None if value is None else str(int(value * 1024 * 1024))


def _flag(value: Optional[bool]) -> Optional[str]:
    return None if value is None else ("1" if value else "0")


def _cycle_time(host: HostView, autotune: bool) -> KnobChoice:
    if autotune:
        return None, "left to Horovod's autotuner (a value set here would be fixed, not tuned)"
    if host.gpu:
        return None, ("Horovod's default (1 ms): GPU steps are long, so waiting up to a cycle costs little and "
                      "lets more gradients fuse into one allreduce")
    if host.controller != "mpi":
        return None, ("Horovod's default (1 ms) under Gloo: measured on 2 shared cores (200k-row table, np=2), a "
                      "0.1 ms cycle made Gloo's background loop compete with the compute (38-40 s against 29-37 s)")
    return _number(CPU_CYCLE_TIME_MS), (
        "CPU ranks: a small model's step can take under a millisecond, and every allreduce waits for the next "
        "negotiation cycle, so Horovod's default 1 ms cycle, not the compute, would set the step rate")


def _fusion_threshold(host: HostView, autotune: bool) -> KnobChoice:
    if autotune:
        return None, "left to Horovod's autotuner (a value set here would be fixed, not tuned)"
    # Horovod: every rank must fuse the same tensors, so this must not depend on the host.
    return None, ("Horovod's default (128 MiB): gradients up to that size fuse into one allreduce; it must be "
                  "the same on every rank, so the trainer does not vary it per host")


def _yield_when_idle(host: HostView) -> KnobChoice:
    if host.controller != "mpi":
        return None, f"not an MPI job (controller {host.controller or 'unknown'}): Open MPI's setting does not apply"
    if host.cores_per_rank < CORES_PER_RANK_WITHOUT_SHARING:
        return "1", (f"{host.describe()}: each rank keeps two threads busy (torch's compute and Horovod's "
                     "background loop), so they share cores, and MPI's busy-polling waits would take them "
                     "from the compute")
    return None, (f"{host.describe()}: every rank has cores of its own, so Open MPI's default (busy-polling, "
                  "the lowest latency) is kept")


def _torch_threads(host: HostView) -> KnobChoice:
    if host.gpu:
        return None, "GPU ranks: torch's default (the CPU only feeds the GPU)"
    threads = max(1, int(host.cores_per_rank))
    return str(threads), (f"{host.describe()}: one thread per core a rank has, so the ranks do not "
                          "oversubscribe the cores")


def torch_threads_knob(host: HostView, config: HorovodConfig, environ: Mapping[str, str]) -> Knob:
    """torch's threads per rank: OMP_NUM_THREADS (torch reads it itself) > config > the host's share."""
    knob = _pick("OMP_NUM_THREADS", environ, _number(config.torch_threads), "torch_threads",
                 lambda: _torch_threads(host))
    # Only OMP_NUM_THREADS is read from the environment: torch has read it already, so the config's
    # or the trainer's count goes through torch.set_num_threads.
    return knob if knob.source == ENVIRONMENT else dataclasses.replace(knob, variable="torch.set_num_threads")


def _cpu_affinity(host: HostView) -> KnobChoice:
    if host.gpu:
        return None, "GPU ranks: the CPU only feeds the GPU, so the kernel places the threads"
    if host.pinned:
        return None, f"{host.describe()}: the launcher bound this rank already"
    if host.local_size < 2:
        return None, "one rank on this host: it may use every core"
    if host.cores < host.local_size:
        return None, f"{host.describe()}: fewer cores than ranks, so they share cores whatever is set"
    if host.elastic:
        return None, ("elastic job: a rank's local rank can change when the world does, and two ranks would then "
                      "share one rank's cores")
    if host.local_rank is None:
        return None, "the launcher did not say this rank's local rank before hvd.init()"
    share = host.cores // host.local_size
    return "1", (f"{host.describe()}: each rank runs on {share} core(s) of its own instead of the kernel moving "
                 "its threads between cores at every wait (measured on 2 cores, np=2: Gloo trained 1.4x faster, MPI "
                 "1.03x)")


def mpi_transports_knob(host: HostView, environ: Mapping[str, str]) -> Knob:
    """Open MPI's byte transports (OMPI_MCA_btl): libfabric's left out of a one-host job that horovodrun launched.

    Not the usual precedence: horovodrun itself puts `-mca btl ^openib` on mpirun's command line, so that value
    in a rank's environment is horovodrun's, not the user's. Any other value is the user's and is kept.
    """
    variable = "OMPI_MCA_btl"
    current = environ.get(variable, "")
    if host.controller != "mpi":
        return Knob(variable, None, DEFAULT,
                    f"not an MPI job (controller {host.controller or 'unknown'}): Open MPI's setting does not apply")
    if current not in ("", HOROVODRUN_BTL):
        return Knob(variable, current, ENVIRONMENT, "set by the user (mpirun -mca btl or the environment): kept")
    if current == "":
        return Knob(variable, None, DEFAULT, "Open MPI's default transports (the launcher chose none)")
    if not host.one_host:
        return Knob(variable, current, ENVIRONMENT,
                    "horovodrun's choice, kept: ranks on several hosts may need libfabric's transport (ofi) between them")
    return Knob(variable, HOROVODRUN_BTL + ",ofi", TRAINER, (
        "every rank on this host, so shared memory carries all traffic and libfabric's transport (ofi, which "
        "horovodrun's '^openib' leaves in) is never used; loaded, it made every rank's MPI_Finalize take 1.0 s "
        "instead of 0.05 s at exit (Open MPI 4.1.4, Debian 12)"))


def _off(what: str) -> Callable[[], KnobChoice]:
    return lambda: (None, f"off ({what} not set in the config)")


def choose_knobs(local_size: int, cores: int, controller: Optional[str], gpu: bool,
                 config: Optional[HorovodConfig] = None, environ: Optional[Mapping[str, str]] = None,
                 pinned: bool = False, local_rank: Optional[int] = None, elastic: bool = False,
                 size: Optional[int] = None) -> Knobs:
    """Every Horovod knob for this rank, with the reason for each (see the module docstring).

    local_size: ranks on this host (the launcher says so before init); cores: cores this rank
    may run on; controller: "mpi" or "gloo"; gpu: whether the rank trains on a GPU; pinned:
    whether the launcher bound the rank to those cores; local_rank: the launcher's word, or None;
    elastic: whether horovodrun's elastic mode runs the job; size: ranks in the job, or None.
    """
    config = config or HorovodConfig()
    environ = {} if environ is None else environ
    host = HostView(max(1, local_size), max(1, cores), controller, gpu, pinned, local_rank, elastic, size)
    return Knobs(
        cycle_time=_pick("HOROVOD_CYCLE_TIME", environ, _number(config.cycle_time_ms), "cycle_time_ms",
                         lambda: _cycle_time(host, config.autotune)),
        fusion_threshold=_pick("HOROVOD_FUSION_THRESHOLD", environ, _mib_to_bytes(config.fusion_threshold_mb),
                               "fusion_threshold_mb", lambda: _fusion_threshold(host, config.autotune)),
        yield_when_idle=_pick("OMPI_MCA_mpi_yield_when_idle", environ, _flag(config.yield_when_idle),
                              "yield_when_idle", lambda: _yield_when_idle(host)),
        autotune=_pick("HOROVOD_AUTOTUNE", environ, "1" if config.autotune else None, "autotune",
                       _off("distributed.horovod.autotune")),
        autotune_log=_pick("HOROVOD_AUTOTUNE_LOG", environ, _absolute(config.autotune_log), "autotune_log",
                           _off("distributed.horovod.autotune_log")),
        timeline=_pick("HOROVOD_TIMELINE", environ, _absolute(config.timeline), "timeline",
                       _off("distributed.horovod.timeline")),
        timeline_mark_cycles=_pick("HOROVOD_TIMELINE_MARK_CYCLES", environ,
                                   "1" if config.timeline_mark_cycles else None, "timeline_mark_cycles",
                                   _off("distributed.horovod.timeline_mark_cycles")),
        torch_threads=torch_threads_knob(host, config, environ),
        cpu_affinity=_pick(CPU_AFFINITY_VARIABLE, environ, _flag(config.cpu_affinity), "cpu_affinity",
                           lambda: _cpu_affinity(host)),
        mpi_transports=mpi_transports_knob(host, environ),
    )


def _absolute(path: Optional[str]) -> Optional[str]:
    # Horovod opens the file from its background thread; an absolute path does not depend on
    # which directory each rank was started in.
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def controller_advice(controller: Optional[str], size: int, local_size: int, gpu: bool, mpi_built: bool,
                      elastic: bool) -> Optional[str]:
    """One sentence for a job whose controller is slow where it runs (None when there is nothing to say).

    Gloo with every rank on one host: Horovod's Gloo exchange goes over TCP, and its background loop
    coordinates the ranks over TCP too at every negotiation cycle. On 2 CPU cores (2026-12-01, make
    bench's table task: 200k rows, MLP 64-128-128-10, batch 128 per rank, medians of 3 runs;
    benchmarks/results/fused_adam) a bare Horovod step at np=2 took 3.4 ms under Gloo against 1.7 ms under
    MPI and 1.0 ms in one process, and the CLI trained at 78k samples/s under Gloo against 165k under
    MPI and 120k at np=1; no cycle time helped (1 ms was the best of 0.1-1 ms). With each rank on a core
    of its own (cpu_affinity, later the same day) Gloo trained the CLI's 10 epochs in 16.4 s against
    12.6 s at np=1 and 9.5 s under MPI (medians of 3), and cycle times of 0.2-2 ms made no difference. On an
    AMD EPYC (2026-12-07, benchmarks/results/issue16_close) Gloo trained at 66k samples/s against 199k under
    MPI and 161k at np=1. MPI exchanges through shared memory. Elastic jobs need Gloo, and GPU jobs
    exchange with NCCL whatever the controller, so neither is told.
    """
    if controller != "gloo" or size < 2 or local_size != size or gpu or elastic or not mpi_built:
        return None
    return (f"Horovod's Gloo controller runs this job's {size} ranks, all on one host: Gloo exchanges gradients "
            "over TCP, which on CPUs costs more than a small model's step (measured on 2-core machines: np=2 "
            "trained at 0.4-0.8x one process under Gloo, 1.15-1.3x under MPI). This Horovod has MPI: for a job on "
            f"one host, launch 'horovodrun --mpi -np {size} ...' or 'mpirun -np {size} ...' instead.")
