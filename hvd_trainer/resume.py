"""Resume as a protocol: rank 0 finds the latest checkpoint, broadcasts what it found, every rank loads.

Only rank 0 reads the run directory; the other ranks get the progress tracker, the weights
(through the strategy's sync), the optimizer, scheduler and RNG states by broadcast, so they
never need the files. Errors found on rank 0 (a corrupt or mismatched checkpoint) travel in the
same broadcast and are raised on every rank, instead of leaving the others waiting.

A run resumed at another world size keeps its data position by samples seen (`remap`); this is
where elastic resets plug in.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from hvd_trainer.checkpoint import CheckpointManager, set_rng_state
from hvd_trainer.config import TrainerConfig
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.distributed.base import DistributedStrategy
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.run_layout import LATEST_CHECKPOINT
from hvd_trainer.schedule import Schedule

logger = logging.getLogger(__name__)


@dataclass
class Resumed:
    """What a resume hands the trainer, identical on every rank."""

    progress: ProgressTracker
    #: The LR scheduler's state, applied once the trainer has sized the schedule.
    scheduler_state: Dict[str, Any]
    #: Every rank's RNG states when the checkpoint was written (None if it had none).
    rng_states: Optional[List[Dict[str, Any]]]


def resume_files_exist(progress_path: str, checkpoints_dir: str) -> bool:
    """Both training_progress.json and latest.ckpt must exist (Ludwig's rule); a warning names what is missing."""
    missing = [p for p in (progress_path, os.path.join(checkpoints_dir, LATEST_CHECKPOINT)) if not os.path.exists(p)]
    if missing:
        logger.warning("Could not find %s; the model will be trained from scratch.", ", ".join(missing))
        return False
    return True


def resume(manager: CheckpointManager, progress_path: str, distributed: DistributedStrategy,
           model, optimizer, scheduler) -> Optional[Resumed]:
    """Find -> broadcast -> load. None (on every rank) when there is nothing to resume from.

    The tracker inside latest.ckpt is used rather than training_progress.json: both are written
    at the same step, but only the checkpoint is guaranteed to match the weights if the process
    died between the two writes.
    """
    found = run_on_coordinator(distributed, "hvd_trainer.resume",
                               lambda: _load_on_coordinator(manager, progress_path, scheduler))
    if found is None:
        return None
    # Horovod: rank 0 loaded the weights and optimizer state; every rank continues from them.
    distributed.sync_model(model)
    distributed.sync_optimizer(optimizer)
    if not distributed.is_coordinator():
        manager.checkpoint.load_extra_state_dicts(found["extra"])  # the GradScaler's scale, say
    progress = ProgressTracker.load(found["tracker"])
    if distributed.is_coordinator():
        logger.info("Resuming from step %d (epoch %d, batch %d of the epoch).",
                    progress.steps, progress.epoch, progress.epoch_step)
    return Resumed(progress, found["scheduler"], found["rng"])


def _load_on_coordinator(manager: CheckpointManager, progress_path: str, scheduler) -> Optional[Dict[str, Any]]:
    """Rank 0: load latest.ckpt into the model, optimizer and scheduler; what the others need (a broken or
    mismatched checkpoint raises CheckpointError, which run_on_coordinator raises on every rank)."""
    if not resume_files_exist(progress_path, manager.directory):
        return None
    meta = manager.checkpoint.apply(manager.read_latest(), manager.latest_path)
    return {"tracker": meta.get("progress"), "scheduler": scheduler.state_dict(), "rng": meta.get("rng_states"),
            "extra": manager.checkpoint.extra_state_dicts()}


def remap(progress: ProgressTracker, old_size: int, new_size: int, batches_per_epoch: int) -> ProgressTracker:
    """The same run at another world size: the epoch position mapped by samples seen.

    A batch at world size n takes batch_size x n samples, so the samples already seen in this
    epoch take ceil(epoch_step x old / new) batches at the new size (capped at one epoch). Returns
    a new tracker; `progress` is not changed.
    """
    new_step = math.ceil(progress.epoch_step * progress.batch_size * old_size / (progress.batch_size * new_size)) \
        if progress.batch_size else progress.epoch_step
    return dataclasses.replace(progress, epoch_step=min(new_step, batches_per_epoch), world_size=new_size)


def fold_offset(progress: ProgressTracker) -> ProgressTracker:
    """A checkpoint that an elastic run wrote after a world size change in mid-epoch, for a job that deals
    whole epochs: the epoch's position as batches at the tracker's world size (rounded up, as `remap`)."""
    if not progress.batch_size:
        return dataclasses.replace(progress, epoch_offset=0)
    samples = progress.epoch_offset + progress.epoch_step * progress.batch_size * progress.world_size
    return dataclasses.replace(progress, epoch_offset=0,
                               epoch_step=math.ceil(samples / (progress.batch_size * progress.world_size)))


def restore_schedule(resumed: Optional[Resumed], pt: ProgressTracker, scheduler, config: TrainerConfig,
                     batches_per_epoch: int, distributed: DistributedStrategy,
                     base_lr: float) -> Tuple[ProgressTracker, Schedule]:
    """Size the LR schedule for the run; a resumed run gets its scheduler and RNG states back.

    At another world size than the run that wrote the checkpoint, the data is re-sharded: the
    epoch position is re-mapped by samples seen (`remap`) and the LR re-scaled to `base_lr`.
    Returns the tracker to continue with and the run's schedule.
    """
    size = distributed.size()
    resized = resumed is not None and pt.world_size != size
    if pt.epoch_offset and not distributed.is_elastic():
        pt = fold_offset(pt)  # a fixed job deals whole epochs only
    if resized:
        remapped = remap(pt, pt.world_size, size, batches_per_epoch)
        if distributed.is_coordinator():
            logger.info("Resuming a run trained on %d rank(s) with %d rank(s): data re-sharded, learning rate "
                        "re-scaled from %.3g to %.3g, epoch position %d -> %d batch(es).", pt.world_size, size,
                        resumed.scheduler_state["base_lr"], base_lr, pt.epoch_step, remapped.epoch_step)
        pt = remapped
    schedule = Schedule.of(config, batches_per_epoch, pt)
    if resized:
        schedule = schedule.aligned_to_epoch_end(pt, config.gradient_accumulation_steps_resolved())
    scheduler.reset(schedule.steps_per_evaluation, schedule.total_steps)
    if resumed:
        scheduler.load_state_dict(resumed.scheduler_state)
        if resized:
            scheduler.base_lr = base_lr
            scheduler.reset(schedule.steps_per_evaluation, schedule.total_steps)
        elif resumed.rng_states is not None and len(resumed.rng_states) == size:
            set_rng_state(resumed.rng_states[distributed.rank()])
    return pt, schedule
