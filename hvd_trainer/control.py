"""Rank agreement on what can differ between ranks in the training loop: stop signals and NaN losses.

A SIGTERM reaches one rank, a NaN appears in one rank's batch: if that rank alone stopped, the
others would wait in their next allreduce forever. So the ranks agree, through one small
max-allreduce, at the same optimizer steps. Each agreement costs Horovod a negotiation cycle
(measured on a small MLP at np=2: 7.0 -> 11.6 ms per step when done every step, and still 3-5%
of its throughput every 20 steps), so agreements are spaced in *time*: about
`interval_seconds` of training apart, the spacing in steps derived from the slowest rank's step
time (hundreds of steps for a small model, every step for one whose steps take a second).

The loop asks `due(step)` before a step; the step calls `submit()` right behind its backward pass
(Horovod then fuses the flags with the gradients' allreduce instead of running a cycle of its
own); after the step the loop calls `collect()` and acts on the Decision, identical on every rank.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from hvd_trainer import signals
from hvd_trainer.distributed.base import DistributedStrategy, PendingReduce
from hvd_trainer.errors import TrainingDivergedError
from hvd_trainer.rank_errors import DeferredErrors

#: A NaN at step s travels as NONFINITE_BASE - s, so that a max-reduction finds the earliest.
NONFINITE_BASE = float(2**40)


@dataclass(frozen=True)
class Decision:
    """What every rank does after an agreement."""

    #: Why training must stop now (a signal's reason), or None.
    stop_reason: Optional[str]
    #: The earliest step at which any rank's loss was NaN or infinite, or None.
    nonfinite_step: Optional[int]

    def raise_if_diverged(self, epoch: int, resume_hint: str) -> None:
        """The same error on every rank when any rank's loss was NaN or infinite."""
        if self.nonfinite_step is not None:
            raise TrainingDivergedError(
                f"The training loss became NaN or infinite at step {self.nonfinite_step} (epoch {epoch}) on at "
                "least one rank, so every rank stops here. Lower trainer.learning_rate, keep "
                "trainer.gradient_clipping.clipglobalnorm set, and check the data for NaN or extreme values."
                + resume_hint)


class Control:
    """The agreement protocol: when to agree, what to send, what was agreed."""

    #: Seconds of training between two agreements (SLURM's grace after SIGTERM is 30 s by default).
    interval_seconds = 1.0
    #: A train() call agrees at its first step (which starts the clock) and this many steps later.
    first_steps = 4
    max_steps = 1000

    def __init__(self, distributed: DistributedStrategy, stop_signals: signals.StopSignals):
        self.distributed = distributed
        self.signals = stop_signals
        #: Optimizer steps taken by this trainer (all train() calls).
        self.optimizer_steps = 0
        self._next_step = 0
        self._spacing = self.first_steps
        #: (time, optimizer step) of the last agreement; None after a pause in training
        #: (evaluation, epoch end), so that a pause is not counted as step time.
        self._clock: Optional[Tuple[float, int]] = None
        self._nonfinite_step: Optional[int] = None
        self._pending: Optional[PendingReduce] = None
        #: Errors of code that not every rank runs, raised on every rank at the next agreement.
        self.errors = DeferredErrors(distributed)

    def start(self) -> None:
        """A train() call begins: agree at its first step, then `first_steps` later; no error carried over."""
        self.errors.first = None
        self._spacing = self.first_steps
        self._next_step = self.optimizer_steps
        self._clock = None

    def forget_pending(self) -> None:
        """The world changed (elastic training): an agreement in flight belongs to the old one."""
        self._pending, self._clock = None, None
        self._spacing, self._next_step = self.first_steps, self.optimizer_steps

    def pause(self) -> None:
        """Training pauses (an evaluation, the end of an epoch): that time is not step time."""
        self._clock = None

    def due(self, before_boundary: bool = False) -> bool:
        """Whether the next optimizer step carries an agreement.

        before_boundary: the step before an evaluation or the end, which always agrees, so that
        nothing is evaluated or saved after a NaN and a late signal is not lost.
        """
        return before_boundary or self.optimizer_steps >= self._next_step

    def stepped(self) -> None:
        """One optimizer step was taken."""
        self.optimizer_steps += 1

    def note_loss(self, loss_value: float, step: int) -> None:
        """Remember the first step whose loss was not finite (sent with the next agreement)."""
        if self._nonfinite_step is None and not math.isfinite(loss_value):
            self._nonfinite_step = step

    def submit(self) -> None:
        """Start the agreement: one max-reduction of [stop request, earliest NaN step, seconds per step, failed]."""
        now = time.perf_counter()
        seconds_per_step = 0.0
        if self._clock is not None and self.optimizer_steps > self._clock[1]:
            seconds_per_step = (now - self._clock[0]) / (self.optimizer_steps - self._clock[1])
        self._clock = (now, self.optimizer_steps)
        nonfinite = NONFINITE_BASE - self._nonfinite_step if self._nonfinite_step is not None else 0.0
        flags = torch.tensor([float(self.signals.requested), nonfinite, seconds_per_step, float(self.errors.failed)],
                             dtype=torch.float64)
        if self.distributed.size() == 1:
            # Nothing to agree on; Horovod would still route it through its background thread.
            self._pending = PendingReduce(lambda: flags)
        else:
            self._pending = self.distributed.allreduce_async(flags, op="max")

    def collect(self) -> Decision:
        """Wait for the agreement started by submit(); the same Decision on every rank."""
        flags, self._pending = self._pending.wait(), None
        stop, nonfinite, seconds_per_step, failed = flags.tolist()
        if failed:
            self.errors.raise_agreed()
        if seconds_per_step > 0:
            # The slowest rank's step time, so every rank derives the same spacing.
            self._spacing = max(1, min(self.max_steps, int(self.interval_seconds / seconds_per_step)))
        self._next_step = self._clock[1] + self._spacing
        return Decision(stop_reason=signals.STOP_REASONS[int(stop)],
                        nonfinite_step=int(NONFINITE_BASE - nonfinite) if int(nonfinite) else None)

    def vote(self, local_stop: bool) -> bool:
        """One collective outside the step: whether any rank wants to stop; raises any rank's deferred error."""
        if self.distributed.size() == 1:
            self.errors.check()
            return bool(local_stop)
        stop, failed = self.distributed.allreduce(
            torch.tensor([float(local_stop), float(self.errors.failed)], dtype=torch.float64), op="max").tolist()
        if failed:
            self.errors.raise_agreed()
        return bool(stop)
