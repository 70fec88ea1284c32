"""The DistributedStrategy interface and its one-process implementation.

The trainer talks to other ranks only through this interface and never imports horovod.
Abstract methods are the ones every backend must answer differently (world queries and
collectives); everything else has a default that is right for a single process.
"""
from __future__ import annotations

import abc
import math
import contextlib
import functools
from typing import Any, Callable, ContextManager, List, Optional

import torch

REDUCE_OPS = ("average", "sum", "min", "max")


def scaled_learning_rate(base: float, scaling: str, world_size: int) -> float:
    """The LR every rank uses: data parallelism multiplies the effective batch by world_size."""
    if scaling == "linear":
        return base * world_size
    if scaling == "sqrt":
        return base * math.sqrt(world_size)
    return base


class DistributedStrategy(abc.ABC):
    """How ranks of a data-parallel job talk to each other."""

    name: str = "abstract"
    #: Optimizer steps between two in-memory commits of an elastic job (distributed.elastic_commit_steps).
    elastic_commit_steps: int = 100

    # ---- world ---------------------------------------------------------------------------
    @abc.abstractmethod
    def size(self) -> int:
        """Number of ranks in the job."""

    @abc.abstractmethod
    def rank(self) -> int:
        """This process's rank, 0 .. size-1."""

    @abc.abstractmethod
    def local_size(self) -> int:
        """Number of ranks on this host."""

    @abc.abstractmethod
    def local_rank(self) -> int:
        """This process's rank among the ranks on this host."""

    def is_coordinator(self) -> bool:
        """Rank 0 writes shared files, prints tables and owns the progress bar."""
        return self.rank() == 0

    # ---- collectives ---------------------------------------------------------------------
    @abc.abstractmethod
    def barrier(self) -> None:
        """Block until every rank has called barrier()."""

    @abc.abstractmethod
    def allreduce(self, t: torch.Tensor, op: str = "average") -> torch.Tensor:
        """Reduce a tensor over all ranks (average, sum, min or max); returns a new tensor."""

    def allreduce_async(self, t: torch.Tensor, op: str = "average") -> "PendingReduce":
        """Start an allreduce; `.wait()` on the result returns the reduced tensor.

        Backends that batch collectives (Horovod) can fuse a small tensor submitted just
        before backward with the gradient reductions of that step, so it costs almost nothing.
        """
        return PendingReduce(lambda: self.allreduce(t, op))

    @abc.abstractmethod
    def broadcast(self, t: torch.Tensor, root: int = 0) -> torch.Tensor:
        """Rank root's value of t on every rank; returns a new tensor."""

    @abc.abstractmethod
    def broadcast_object(self, obj: Any, name: str) -> Any:
        """Any picklable object from rank 0. `name` must be the same on every rank."""

    @abc.abstractmethod
    def gather_all_tensors(self, t: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's tensor, in rank order; first dimensions may differ between ranks."""

    def allgather_object(self, obj: Any, name: str) -> List[Any]:
        """Every rank's picklable object, in rank order (doctor, pre-flight checks)."""
        check_object_name(name)
        return [obj]

    # ---- model and optimizer -------------------------------------------------------------
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                       gradient_accumulation_steps: int = 1) -> torch.optim.Optimizer:
        """The optimizer the trainer built, wrapped as this backend needs (unchanged here)."""
        return optimizer

    def learning_rate_multiplier(self, scaling: str) -> float:
        """How much the configured LR grows with the world size (trainer.learning_rate_scaling).

        Averaged gradients: the effective batch is world_size times larger, so linear (or sqrt)
        scaling keeps the step per sample. Backends whose reduction differs override this.
        """
        return scaled_learning_rate(1.0, scaling, self.size())

    def sync_model(self, model: torch.nn.Module) -> None:
        """Make every rank's parameters and buffers equal to rank 0's."""

    def average_batch_norm_statistics(self, model: torch.nn.Module) -> None:
        """Set every BatchNorm's running mean and variance to their average over ranks (one allreduce).

        Each rank's running statistics follow only its own shard. Called before every evaluation
        and checkpoint, so that what is evaluated (on every rank's shard) is one model, and the
        checkpoint rank 0 writes holds that same model: the metrics a run reports are then those
        of the saved model. Training in between goes on with per-rank statistics, as
        Horovod's and DDP's default BatchNorm does (not SyncBatchNorm, which would add an
        allreduce to every forward pass).
        """
        if self.size() == 1:
            return
        buffers = [b for m in model.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                   for b in (m.running_mean, m.running_var) if b is not None]
        if not buffers:
            return
        averaged = self.allreduce(torch.cat([b.detach().reshape(-1).double() for b in buffers]), op="average")
        offset = 0
        for b in buffers:
            b.copy_(averaged[offset:offset + b.numel()].view_as(b))
            offset += b.numel()

    def sync_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Make every rank's optimizer state equal to rank 0's."""

    def wait_optimizer_synced(self, optimizer: torch.optim.Optimizer) -> None:
        """Finish the gradient reduction, so gradients can be unscaled and clipped."""

    def prepare_model_update(self, model: torch.nn.Module, should_step: bool) -> ContextManager:
        """Context around forward and backward of one (possibly accumulating) batch."""
        return contextlib.nullcontext()

    def prepare_optimizer_update(self, optimizer: torch.optim.Optimizer) -> ContextManager:
        """Context around optimizer.step() after wait_optimizer_synced()."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, model: torch.nn.Module) -> None:
        loss.backward()

    def step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable] = None) -> Any:
        return optimizer.step(closure)

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()

    # ---- elastic training ----------------------------------------------------------------
    def is_elastic(self) -> bool:
        """Whether the world may shrink or grow during training (Horovod's elastic mode); never here."""
        return False

    def run_elastic(self, fn: Callable[[], Any], participant: Any) -> Any:
        """fn() for a static world; an elastic backend re-runs it after each membership change (see
        distributed/elastic.py for `participant`)."""
        return fn()

    def elastic_commit(self) -> None:
        """Keep the elastic state in memory (and notice added or removed hosts); nothing to do here."""

    def is_membership_change(self, error: BaseException) -> bool:
        """Whether `error` means the world is changing (a peer lost, hosts added) and must reach the elastic
        run as it is, never deferred or wrapped; never here."""
        return False

    def elastic_joined(self) -> Optional[dict]:
        """What a running elastic job told this process when it joined it, until its first state sync (then
        None); None for every process that started with the job. A joining process runs no collective
        before that sync: the others are waiting in it."""
        return None

    # ---- helpers -------------------------------------------------------------------------
    def return_first(self, fn: Callable) -> Callable:
        """Wrap fn so that rank 0 returns its result and the other ranks return None."""

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            return result if self.rank() == 0 else None

        return wrapped

    def allow_gradient_accumulation(self) -> bool:
        """Whether gradient_accumulation_steps > 1 works with this backend (the trainer refuses it otherwise)."""
        return True

    def allow_mixed_precision(self) -> bool:
        return True

    def allow_clip_gradients(self) -> bool:
        return True

    def create_checkpoint_handle(self, model, optimizer=None, scheduler=None, **extra):
        """A Checkpoint of these objects that only rank 0 writes (see Checkpoint for why not local rank 0)."""
        from hvd_trainer.checkpoint import Checkpoint

        return Checkpoint(self, model, optimizer, scheduler, **extra)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when flag is True on at least one rank (one collective)."""
        if self.size() == 1:
            return bool(flag)
        return bool(self.allreduce(torch.tensor([1.0 if flag else 0.0]), op="max").item() > 0)

    @classmethod
    def is_available(cls) -> bool:
        """Whether this backend can run here (SPEC section 3 names it in the strategy interface)."""
        return True

    def shutdown(self) -> None:
        """Release the backend; the strategy cannot be used afterwards (SPEC section 3's interface)."""


class LocalStrategy(DistributedStrategy):
    """One process, no Horovod: every collective is the identity."""

    name = "local"

    def size(self) -> int:
        return 1

    def rank(self) -> int:
        return 0

    def local_size(self) -> int:
        return 1

    def local_rank(self) -> int:
        return 0

    def barrier(self) -> None:
        pass

    def allreduce(self, t: torch.Tensor, op: str = "average") -> torch.Tensor:
        check_reduce_op(op)
        return t.clone()

    def broadcast(self, t: torch.Tensor, root: int = 0) -> torch.Tensor:
        return t.clone()

    def broadcast_object(self, obj: Any, name: str) -> Any:
        check_object_name(name)
        return obj

    def gather_all_tensors(self, t: torch.Tensor) -> List[torch.Tensor]:
        return [t.clone()]


class PendingReduce:
    """A collective in flight; wait() returns its result (once)."""

    def __init__(self, wait_fn: Callable[[], torch.Tensor]):
        self._wait_fn = wait_fn

    def wait(self) -> torch.Tensor:
        return self._wait_fn()


def check_reduce_op(op: str) -> None:
    if op not in REDUCE_OPS:
        raise ValueError(f"Unknown reduce op {op!r}; use one of {', '.join(REDUCE_OPS)}.")


def check_object_name(name: Optional[str]) -> None:
    # Horovod derives a default name from the object's type; ranks that pass different
    # types (a dict on rank 0, None elsewhere) then wait on different names forever.
    if not name or not isinstance(name, str):
        raise ValueError(
            "broadcast_object needs an explicit name that is the same on every rank; without "
            "one, ranks passing objects of different types wait on different collectives and hang."
        )
