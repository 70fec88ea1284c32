"""The run's length in optimizer steps, as a pure function of the config and the data.

One place computes how many steps an epoch has, how many the whole run has, how often it is
evaluated and how many steps without improvement end it; the trainer asks again whenever an
input changes (the batch size grew on a plateau, a resume at another world size), so that the
curve bends to the new length instead of starting over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hvd_trainer.config import TrainerConfig
from hvd_trainer.progress import ProgressTracker


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    #: The step count at which training ends (train_steps, or the steps the remaining epochs take).
    total_steps: int
    #: Steps between two evaluations (each with a checkpoint): Ludwig's steps_per_checkpoint.
    steps_per_evaluation: int
    #: Steps without improvement of the validation metric that end training (early_stop evaluations).
    early_stopping_steps: int

    @classmethod
    def of(cls, config: TrainerConfig, steps_per_epoch: int,
           progress: Optional[ProgressTracker] = None) -> "Schedule":
        """The schedule of a run at `progress` (None: not started) with `steps_per_epoch` from now on.

        Without train_steps the run ends after config.epochs epochs: the steps already taken plus
        what the remaining epochs take at today's steps per epoch (for a fresh run, epochs x steps).
        """
        steps, epoch, epoch_step = (progress.steps, progress.epoch, progress.epoch_step) if progress else (0, 0, 0)
        if config.train_steps:
            total = config.train_steps
        else:
            total = steps + max(0, (config.epochs - epoch) * steps_per_epoch - epoch_step)
        per_evaluation = min(steps_per_evaluation(config, steps_per_epoch), max(1, total))
        return cls(steps_per_epoch, total, per_evaluation, per_evaluation * config.early_stop)

    def next_evaluation_after(self, steps: int) -> int:
        """The first evaluation step after `steps`, on multiples of steps_per_evaluation."""
        return (steps // self.steps_per_evaluation + 1) * self.steps_per_evaluation


def steps_per_evaluation(config: TrainerConfig, steps_per_epoch: int) -> int:
    """steps_per_checkpoint or checkpoints_per_epoch (never both), at most one epoch."""
    if config.steps_per_checkpoint:
        return min(config.steps_per_checkpoint, steps_per_epoch)
    if config.checkpoints_per_epoch:
        return max(1, steps_per_epoch // config.checkpoints_per_epoch)
    return steps_per_epoch
