"""The working state of one train() call, kept together instead of passed piecemeal."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hvd_trainer.checkpointer import Checkpointer
from hvd_trainer.data.dataset import Batcher, Dataset
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.schedule import Schedule

logger = logging.getLogger(__name__)


@dataclass
class TrainingSession:
    """The working state of one train() call, kept together instead of passed piecemeal."""

    save_path: str
    progress_tracker: ProgressTracker
    batcher: Batcher
    checkpointer: Checkpointer
    writers: Dict[str, Any]
    training_set: Dataset
    validation_set: Optional[Dataset]
    test_set: Optional[Dataset]
    schedule: Schedule
    #: The step at which the next evaluation and checkpoint happen.
    next_evaluation: int
    has_validation: bool
    progress_bar: Any = None
    #: The latest evaluation's {split: {feature: {metric: value}}}, for rank 0's line (hvd_trainer.console).
    last_evaluation: Any = None
    start_time: float = field(default_factory=time.time)

    def save_progress(self, learning_rate: float) -> None:
        """The elapsed time and LR into the tracker, then latest.ckpt and training_progress.json."""
        pt, now = self.progress_tracker, time.time()
        pt.learning_rate = learning_rate
        pt.elapsed_time += now - self.start_time
        self.start_time = now
        self.checkpointer.save_progress(pt)

    def close(self) -> None:
        """Event files and the progress bar closed; every checkpoint on disk (a write error is raised, or logged while another error is in flight)."""
        for w in self.writers.values():
            w.close()
        if self.progress_bar is not None:
            self.progress_bar.close()
        self.checkpointer.wait()

    def announce(self, world_size: int, learning_rate: float) -> None:
        """Rank 0: one line with the run's shape, and the progress bar."""
        pt, schedule = self.progress_tracker, self.schedule
        logger.info("Training on %d rank(s): %d step(s) per epoch per rank, batch size %d per rank "
                    "(%d per step overall), %d total step(s), evaluation every %d step(s), learning rate %.3g.",
                    world_size, schedule.steps_per_epoch, pt.batch_size, pt.batch_size * world_size,
                    schedule.total_steps, schedule.steps_per_evaluation, learning_rate)
        self.progress_bar = progress_bar(schedule.total_steps, pt.steps)


def progress_bar(total: int, initial: int):
    """The coordinator's tqdm bar over optimizer steps."""
    from tqdm import tqdm

    # In a log file (a batch job's output), a line every 30 s.
    return tqdm(total=total, initial=initial, desc="Training", unit="step", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30)
