"""The run's length in optimizer steps, as a pure function of the config and the data.

Every count here is in optimizer steps, the unit of the progress tracker's `steps`, of
`train_steps`, `steps_per_checkpoint`, the LR warmup and decay, and early stopping. With
gradient accumulation an optimizer step takes `gradient_accumulation_steps` batches (the last
step of an epoch may take fewer), so an epoch of B batches is ceil(B / accumulation) steps.

One place computes how many steps an epoch has, how many the whole run has, how often it is
evaluated and how many steps without improvement end it; the trainer asks again whenever an
input changes (the batch size grew on a plateau, a resume at another world size), so that the
curve bends to the new length instead of starting over.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from hvd_trainer.config import TrainerConfig
from hvd_trainer.progress import ProgressTracker


@dataclass(frozen=True)
class Schedule:
    #: Batches per epoch on this rank (the batcher's count).
    batches_per_epoch: int
    #: Optimizer steps per epoch: ceil(batches_per_epoch / gradient accumulation).
    steps_per_epoch: int
    #: The step count at which training ends (train_steps, or the steps the remaining epochs take).
    total_steps: int
    #: Steps between two evaluations (each with a checkpoint): Ludwig's steps_per_checkpoint.
    steps_per_evaluation: int
    #: Steps without improvement of the validation metric that end training (early_stop evaluations).
    early_stopping_steps: int
    #: Evaluations fall on the steps equal to this modulo steps_per_evaluation: 0, unless the run was resumed at
    #: another world size in mid-epoch (see aligned_to_epoch_end).
    evaluation_phase: int = 0

    @classmethod
    def of(cls, config: TrainerConfig, batches_per_epoch: int, progress: Optional[ProgressTracker] = None,
           batches_this_epoch: Optional[int] = None) -> "Schedule":
        """The schedule of a run at `progress` (None: not started) with `batches_per_epoch` from now on.

        Without train_steps the run ends after config.epochs epochs: the steps already taken plus
        what the remaining epochs take at today's steps per epoch (for a fresh run, epochs x steps).
        batches_this_epoch: the current epoch's batches when they were dealt from a sample offset
        (elastic training changed the world size in it), counted like epoch_step.
        """
        accumulation = config.gradient_accumulation_steps_resolved()
        steps_per_epoch = -(-batches_per_epoch // accumulation)
        steps, epoch, epoch_batch = (progress.steps, progress.epoch, progress.epoch_step) if progress else (0, 0, 0)
        if config.train_steps:
            total = config.train_steps
        elif progress is not None and progress.epoch_offset and batches_this_epoch is not None:
            rest_of_epoch = -(-max(0, batches_this_epoch - epoch_batch) // accumulation) if epoch < config.epochs else 0
            total = steps + rest_of_epoch + max(0, config.epochs - epoch - 1) * steps_per_epoch
        else:
            # The tracker's epoch_step counts batches; the steps they took, rounded up.
            total = steps + max(0, (config.epochs - epoch) * steps_per_epoch - -(-epoch_batch // accumulation))
        per_evaluation = min(steps_per_evaluation(config, steps_per_epoch), max(1, total))
        return cls(batches_per_epoch, steps_per_epoch, total, per_evaluation, per_evaluation * config.early_stop)

    def next_evaluation_after(self, steps: int) -> int:
        """The first evaluation step after `steps`, on multiples of steps_per_evaluation (plus the phase)."""
        every, phase = self.steps_per_evaluation, self.evaluation_phase
        return ((steps - phase) // every + 1) * every + phase

    def aligned_to_epoch_end(self, progress: ProgressTracker, accumulation: int) -> "Schedule":
        """This schedule with its evaluations on the current epoch's end (and every steps_per_evaluation around it).

        A run resumed at another world size in mid-epoch has its step count from the old size and its
        epochs at the new one: its epoch ends are off the multiples of the new steps per epoch, and the
        evaluations would no longer come at the end of each epoch.
        """
        rest_of_epoch = max(0, self.steps_per_epoch - -(-progress.epoch_step // accumulation))
        return dataclasses.replace(self, evaluation_phase=(progress.steps + rest_of_epoch) % self.steps_per_evaluation)


def steps_per_evaluation(config: TrainerConfig, steps_per_epoch: int) -> int:
    """steps_per_checkpoint or checkpoints_per_epoch (never both), at most one epoch."""
    if config.steps_per_checkpoint:
        return min(config.steps_per_checkpoint, steps_per_epoch)
    if config.checkpoints_per_epoch:
        return max(1, steps_per_epoch // config.checkpoints_per_epoch)
    return steps_per_epoch
