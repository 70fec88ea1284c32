"""HorovodStrategy: allreduce gradient aggregation, broadcasts and barriers through Horovod.

The order of operations follows Horovod's own PyTorch examples: init -> pin the device ->
set the number of torch threads -> (trainer: shard data, scale LR) -> broadcast parameters
and optimizer state -> DistributedOptimizer(named_parameters, backward_passes_per_step) ->
synchronize() before unscale/clip and skip_synchronize() around step().
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Callable, ContextManager, List, Optional, Tuple

import torch

from hvd_trainer.config import HorovodConfig
from hvd_trainer.distributed.base import DistributedStrategy, PendingReduce, check_object_name, check_reduce_op
from hvd_trainer.distributed.cpu_affinity import format_cores, pin_to_local_share, process_cores
from hvd_trainer.distributed.elastic import ELASTIC_ENV, elastic_requested, greet, run_elastic
from hvd_trainer.distributed.knobs import HostView, Knobs, choose_knobs, controller_advice, torch_threads_knob
from hvd_trainer.distributed.launcher import LaunchInfo, detect_launcher
from hvd_trainer.errors import ConfigError, LaunchError

logger = logging.getLogger(__name__)

COMPRESSIONS = ("none", "fp16")
OPTIMIZER_OPS = ("average", "sum", "adasum")

_initialized = False
_knobs_in_effect: Optional[Knobs] = None  # the knobs of the hvd.init() that ran in this process
#: What a running elastic job sent this process when it joined (distributed/elastic.py's greet); None
#: once its first state sync is done, and for every process that started with the job.
_joined: Optional[dict] = None


def import_horovod_torch():
    """Import horovod.torch, turning the ways it can be missing into one clear error."""
    try:
        import horovod.torch as hvd  # noqa: F401
    except ImportError as e:
        try:
            import horovod  # noqa: F401
        except ImportError:
            raise LaunchError(
                "Horovod is not installed in this Python environment, so the 'horovod' strategy "
                "cannot run. Run 'make setup' (it builds Horovod 0.28.1 against your PyTorch) and "
                "use .venv/bin/python, or choose distributed.strategy: local for one process."
            ) from e
        raise LaunchError(
            f"Horovod is installed but was built without PyTorch support ({e}). Rebuild it against "
            "the torch in this environment: delete the cached wheel under ~/.cache/hvd_trainer "
            "and run 'make setup', which builds with HOROVOD_WITH_PYTORCH=1."
        ) from e
    return hvd


def _horovod_is_initialized(hvd) -> bool:
    return _initialized and hvd.is_initialized()


def _init_horovod(hvd, info: LaunchInfo, knobs: Knobs) -> None:
    global _initialized, _knobs_in_effect, _joined
    if _horovod_is_initialized(hvd):
        return
    # Horovod: its background thread reads HOROVOD_* when hvd.init() starts it, and Open MPI reads
    # OMPI_MCA_* at MPI_Init (checked: mpi_yield_when_idle set here reads back through MPI_T), so
    # the knobs go into this process's environment before either runs.
    os.environ.update(knobs.environment())
    _knobs_in_effect = knobs
    if knobs.pins_cores():
        _pin_to_a_share_of_the_cores(info)
    if info.uses_mpi:
        if not hvd.mpi_built():
            raise LaunchError(
                f"This job was started by {info.launcher} (MPI), but the installed Horovod was "
                "built without MPI support, so its ranks cannot find each other. Either launch "
                "with 'horovodrun --gloo -np N ...', or rebuild Horovod with MPI: install "
                "libopenmpi-dev (mpicxx on PATH), delete ~/.cache/hvd_trainer and run 'make setup'."
            )
        try:
            from mpi4py import MPI
        except ImportError:
            MPI = None
        if MPI is not None:
            # Horovod: hand MPI's world communicator over, so that mpi4py and Horovod share
            # one MPI initialisation (mpi4py asks for MPI_THREAD_MULTIPLE, which Horovod needs).
            hvd.init(comm=MPI.COMM_WORLD)
        else:
            hvd.init()
    else:
        hvd.init()
    _initialized = True
    if os.environ.get(ELASTIC_ENV) == "1":
        _joined = greet(hvd, None)  # every process of an elastic job greets its first world (a newcomer: a package)


def _pin_to_a_share_of_the_cores(info: LaunchInfo) -> None:
    """Before hvd.init(): this rank's threads, and so Horovod's and Gloo's, on its own cores."""
    if info.local_rank is None or not info.local_size:
        logger.warning("distributed.horovod.cpu_affinity is on, but the launcher (%s) did not say this rank's local "
                       "rank before hvd.init(), so the rank is not pinned to cores of its own.", info.launcher)
        return
    pin_to_local_share(info.local_rank, info.local_size)


def gpu_for_local_rank(local_rank: int, local_size: int, device_count: int) -> int:
    """The GPU of this process: local_rank % device_count, one GPU per rank, never shared.

    One visible GPU (SLURM's --gpus-per-task, or CUDA_VISIBLE_DEVICES set per rank) is the
    rank's own. With several visible GPUs, two ranks of a host must not share one: a clear
    error when the host runs more ranks than it has GPUs.
    """
    if device_count == 1:
        return 0
    if local_size > device_count:
        raise LaunchError(
            f"This host runs {local_size} ranks but has {device_count} GPUs, so ranks would share a GPU (and its "
            "memory). Launch at most one rank per GPU (e.g. 'horovodrun -np N -H host:GPUS'), or give each rank "
            "its own GPU with CUDA_VISIBLE_DEVICES or SLURM's --gpus-per-task=1.")
    return local_rank % device_count


def usable_cores() -> Tuple[int, bool]:
    """(cores this process may run on, whether the launcher pinned it to them).

    A rank is pinned when its CPU affinity is narrower than its parent's (mpirun --bind-to core,
    srun --cpu-bind): those cores are its own. A container's cpuset narrows both alike.
    """
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1, False
    mine = len(os.sched_getaffinity(0))
    try:
        parent = len(os.sched_getaffinity(os.getppid()))
    except OSError:  # the parent is gone or not ours to inspect
        parent = mine
    return mine, mine < parent


def _check_options(compression: str, op: str) -> None:
    if compression not in COMPRESSIONS:
        raise ConfigError(
            f"distributed.compression is {compression!r}, which Horovod does not offer here; "
            f"use one of: {', '.join(COMPRESSIONS)}."
        )
    if op not in OPTIMIZER_OPS:
        raise ConfigError(
            f"distributed.op is {op!r}; the gradient reduction must be one of: "
            f"{', '.join(OPTIMIZER_OPS)}."
        )


class HorovodStrategy(DistributedStrategy):
    """Data parallelism through Horovod (Gloo or MPI controller)."""

    name = "horovod"

    def __init__(self, compression: str = "none", op: str = "average", set_threads: bool = True,
                 horovod: Optional[HorovodConfig] = None, elastic: Optional[bool] = None,
                 elastic_commit_steps: int = DistributedStrategy.elastic_commit_steps):
        """horovod: the `distributed.horovod` section (None: every knob chosen by the trainer);
        set_threads=False leaves torch's thread count alone; elastic: `distributed.elastic`
        (None: elastic exactly when horovodrun's elastic mode launched this process)."""
        _check_options(compression, op)
        self.elastic = elastic_requested(elastic)
        self.elastic_commit_steps = elastic_commit_steps
        self._elastic_state = None
        self.compression = compression
        self.op = op
        self._hvd = hvd = import_horovod_torch()
        self.launch = detect_launcher()
        config = horovod or HorovodConfig()
        cores, pinned = usable_cores()
        self._host = HostView(self.launch.local_size or 1, cores, self.launch.controller,
                              torch.cuda.is_available(), pinned, self.launch.local_rank, self.elastic, self.launch.size)
        self.knobs = self._choose_knobs(config)
        _init_horovod(hvd, self.launch, self.knobs)
        if torch.cuda.is_available():
            # Horovod: one GPU per process, chosen by the local rank.
            torch.cuda.set_device(gpu_for_local_rank(hvd.local_rank(), hvd.local_size(), torch.cuda.device_count()))
        elif set_threads:
            self._set_torch_threads(config)
        if self.rank() == 0:
            self._log_knobs()

    def _log_knobs(self) -> None:
        chosen = dict(self.knobs.environment())
        threads = self.knobs.threads_to_set()
        if threads is not None:
            chosen["torch threads"] = str(threads)
        if self.knobs.pins_cores():
            chosen["rank 0's cores"] = format_cores(process_cores())
        if chosen:
            logger.info("Horovod knobs set by hvd_trainer: %s ('python -m hvd_trainer doctor' says why).",
                        ", ".join(f"{k}={v}" for k, v in chosen.items()))
        logger.debug("Horovod knobs:\n  %s", "\n  ".join(self.knobs.describe()))
        advice = self.controller_advice()
        if advice:
            logger.info(advice)

    def controller_advice(self) -> Optional[str]:
        """A word on a controller that is slow for where the ranks run (knobs.controller_advice), or None."""
        hvd = self._hvd
        return controller_advice(self.controller(), hvd.size(), hvd.local_size(), torch.cuda.is_available(),
                                 hvd.mpi_built(), self.elastic)

    def _choose_knobs(self, config: HorovodConfig) -> Knobs:
        if _horovod_is_initialized(self._hvd) and _knobs_in_effect is not None:
            return _knobs_in_effect  # Horovod reads its knobs once per process
        host = self._host
        return choose_knobs(host.local_size, host.cores, host.controller, host.gpu, config, os.environ, host.pinned,
                            host.local_rank, host.elastic, host.size)

    def _set_torch_threads(self, config: HorovodConfig) -> None:
        if self._hvd.local_size() != self._host.local_size:
            # The launcher did not say how many ranks share this host; Horovod now knows.
            self._host = dataclasses.replace(self._host, local_size=self._hvd.local_size())
            self.knobs = dataclasses.replace(self.knobs, torch_threads=torch_threads_knob(self._host, config, os.environ))
        threads = self.knobs.threads_to_set()
        if threads is not None:
            # Horovod: ranks on one host share its cores; oversubscribing them with torch's
            # default thread count (one per core, per rank) slows every rank down.
            torch.set_num_threads(threads)

    # ---- world ---------------------------------------------------------------------------
    def size(self) -> int:
        return self._hvd.size()

    def rank(self) -> int:
        return self._hvd.rank()

    def local_size(self) -> int:
        return self._hvd.local_size()

    def local_rank(self) -> int:
        return self._hvd.local_rank()

    def cross_rank(self) -> int:
        return self._hvd.cross_rank()

    def cross_size(self) -> int:
        return self._hvd.cross_size()

    def controller(self) -> str:
        return "mpi" if self._hvd.mpi_enabled() else "gloo"

    # ---- collectives ---------------------------------------------------------------------
    def barrier(self) -> None:
        self._hvd.barrier()

    def _reduce_op(self, op: str):
        check_reduce_op(op)
        hvd = self._hvd
        return {"average": hvd.Average, "sum": hvd.Sum, "min": hvd.Min, "max": hvd.Max}[op]

    def allreduce(self, t: torch.Tensor, op: str = "average") -> torch.Tensor:
        return self._hvd.allreduce(t, op=self._reduce_op(op))

    def allreduce_async(self, t: torch.Tensor, op: str = "average") -> PendingReduce:
        handle = self._hvd.allreduce_async(t, op=self._reduce_op(op))
        return PendingReduce(lambda: self._hvd.synchronize(handle))

    def broadcast(self, t: torch.Tensor, root: int = 0) -> torch.Tensor:
        return self._hvd.broadcast(t, root_rank=root)

    def broadcast_object(self, obj: Any, name: str) -> Any:
        check_object_name(name)
        if self.size() == 1:
            return obj  # Horovod would still pickle it and wait for its background thread
        return self._hvd.broadcast_object(obj, root_rank=0, name=name)

    def allgather_object(self, obj: Any, name: str) -> List[Any]:
        check_object_name(name)
        return self._hvd.allgather_object(obj, name=name)

    def gather_all_tensors(self, t: torch.Tensor) -> List[torch.Tensor]:
        t = t.reshape(1) if t.dim() == 0 else t
        # Horovod's allgather concatenates along dim 0 and allows different lengths there;
        # the lengths are gathered first so the result can be split back per rank.
        lengths = self._hvd.allgather(torch.tensor([t.shape[0]], dtype=torch.int64))
        gathered = self._hvd.allgather(t.contiguous())
        return list(torch.split(gathered, lengths.tolist(), dim=0))

    # ---- model and optimizer -------------------------------------------------------------
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                       gradient_accumulation_steps: int = 1) -> torch.optim.Optimizer:
        if isinstance(optimizer, torch.optim.LBFGS):
            # Horovod's DistributedOptimizer cannot drive L-BFGS: its backward hooks allow one
            # allreduce per step(), but L-BFGS evaluates its closure many times inside one step().
            # The closure averages the loss and gradients itself instead (hvd_trainer.step).
            return optimizer
        hvd = self._hvd
        compression = hvd.Compression.fp16 if self.compression == "fp16" else hvd.Compression.none
        op = {"average": hvd.Average, "sum": hvd.Sum, "adasum": hvd.Adasum}[self.op]
        # Horovod: averaging happens in backward hooks; backward_passes_per_step tells them to
        # accumulate that many local backward passes before one allreduce.
        return hvd.DistributedOptimizer(
            optimizer,
            named_parameters=model.named_parameters(),
            compression=compression,
            backward_passes_per_step=gradient_accumulation_steps,
            op=op,
        )

    def learning_rate_multiplier(self, scaling: str) -> float:
        """Horovod's guidance per reduction: average -> scale by world size; Adasum -> do not; sum -> refused.

        Adasum combines gradients so that the step does not grow with the number of ranks, so
        Horovod's examples keep the LR unscaled (by the local size with NCCL on GPUs, where
        Adasum reduces hierarchically). Summed gradients already make the step world_size times
        larger; scaling the LR on top would multiply it twice.
        """
        if self.op == "adasum":
            multiplier = float(self.local_size()) if torch.cuda.is_available() and self._hvd.nccl_built() else 1.0
            if scaling != "constant" and self.rank() == 0:
                logger.info("distributed.op is adasum: the learning rate is multiplied by %g, not scaled by the world "
                            "size (Horovod's guidance for Adasum); trainer.learning_rate_scaling=%s does not apply.",
                            multiplier, scaling)
            return multiplier
        if self.op == "sum" and scaling != "constant" and self.size() > 1:
            raise ConfigError(
                f"distributed.op is sum with trainer.learning_rate_scaling {scaling}: summed gradients already make "
                f"each step {self.size()} times larger than one rank's, and scaling the learning rate by the world "
                "size on top would apply that factor twice. Set trainer.learning_rate_scaling: constant, or "
                "distributed.op: average.")
        return super().learning_rate_multiplier(scaling)

    def sync_model(self, model: torch.nn.Module) -> None:
        # Horovod: every rank starts from rank 0's weights (and buffers, e.g. batch-norm stats).
        if self.size() > 1:
            self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def sync_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        # Rank 0's whole state dict is sent as one object rather than through
        # hvd.broadcast_optimizer_state, which fills an empty state by running a zero-gradient
        # step(): that moves weights under weight decay and advances Adam's step counter.
        if self.size() == 1:
            return
        state = self.broadcast_object(optimizer.state_dict() if self.rank() == 0 else None,
                                      name="hvd_trainer.optimizer_state")
        if self.rank() != 0:
            optimizer.load_state_dict(state)

    @staticmethod
    def _has_gradient_hooks(optimizer: torch.optim.Optimizer) -> bool:
        # Horovod's DistributedOptimizer registers its allreduce hooks only at size > 1 (or
        # under elastic); without them synchronize() has nothing to wait for.
        return bool(getattr(optimizer, "_requires_update", None))

    def wait_optimizer_synced(self, optimizer: torch.optim.Optimizer) -> None:
        # Horovod: finish the gradient allreduce now, so that unscale and clip see the
        # averaged gradients; step() then runs under skip_synchronize().
        if self._has_gradient_hooks(optimizer):
            optimizer.synchronize()

    def prepare_optimizer_update(self, optimizer: torch.optim.Optimizer) -> ContextManager:
        if self._has_gradient_hooks(optimizer):
            return optimizer.skip_synchronize()
        return contextlib.nullcontext()

    def step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable] = None) -> Any:
        return optimizer.step(closure)

    # ---- elastic training ----------------------------------------------------------------
    def is_elastic(self) -> bool:
        return self.elastic

    def run_elastic(self, fn: Callable[[], Any], participant: Any) -> Any:
        if not self.elastic:
            return fn()
        return run_elastic(self._hvd, fn, participant, self._set_elastic_state, self._synced)

    def is_membership_change(self, error: BaseException) -> bool:
        if not self.elastic:
            return False
        from horovod.common.exceptions import HorovodInternalError, HostsUpdatedInterrupt

        return isinstance(error, (HorovodInternalError, HostsUpdatedInterrupt))

    def elastic_joined(self) -> Optional[dict]:
        return _joined

    @staticmethod
    def _synced() -> None:
        global _joined
        _joined = None  # this process holds the job's state now: a member like any other

    def _set_elastic_state(self, state) -> None:
        self._elastic_state = state

    def elastic_commit(self) -> None:
        if self._elastic_state is not None:
            self._elastic_state.commit()

    @classmethod
    def is_available(cls) -> bool:
        """Whether horovod.torch imports here (SPEC section 3's interface)."""
        try:
            import horovod.torch  # noqa: F401
        except ImportError:
            return False
        return True

    def shutdown(self) -> None:
        global _initialized
        if _initialized:
            self._hvd.shutdown()
            _initialized = False
_knobs_in_effect: Optional[Knobs] = None  # the knobs of the hvd.init() that ran in this process
