"""What one train() call saves, and when: a template over the CheckpointManager's files.

At every evaluation: latest.ckpt and training_progress.json (unless skip_save_progress). On a new
best validation value: best.ckpt and model_weights (unless skip_save_model). After training: the
best model back on every rank. Every rank calls each method (the RNG states are gathered into
latest.ckpt, best's existence is broadcast); only rank 0 touches the run directory.
"""
from __future__ import annotations

import logging
import os
import sys

import torch

from hvd_trainer.checkpoint import CheckpointManager, load_checkpoint_file
from hvd_trainer.distributed.base import DistributedStrategy
from hvd_trainer.errors import CheckpointError
from hvd_trainer.progress import ProgressTracker

logger = logging.getLogger(__name__)

TRAINING_PROGRESS_FILE = "training_progress.json"
TRAINING_CHECKPOINTS_DIR = "training_checkpoints"
MODEL_WEIGHTS_FILE = "model_weights"


class Checkpointer:
    def __init__(self, manager: CheckpointManager, save_path: str, distributed: DistributedStrategy,
                 skip_save_model: bool = False, skip_save_progress: bool = False):
        self.manager = manager
        self.distributed = distributed
        self.progress_path = os.path.join(save_path, TRAINING_PROGRESS_FILE)
        self.weights_path = os.path.join(save_path, MODEL_WEIGHTS_FILE)
        self.skip_save_model = skip_save_model
        self.skip_save_progress = skip_save_progress

    @classmethod
    def for_run(cls, save_path: str, distributed: DistributedStrategy, model: torch.nn.Module, optimizer, scheduler,
                scaler=None, background: bool = True, skip_save_model: bool = False,
                skip_save_progress: bool = False) -> "Checkpointer":
        """Checkpoints of these objects in save_path/training_checkpoints (the strategy's handle: rank 0 writes)."""
        # The uncompiled module: torch.compile's wrapper prefixes every state_dict key with _orig_mod.
        handle = distributed.create_checkpoint_handle(model, optimizer, scheduler, scaler=scaler)
        manager = CheckpointManager(handle, os.path.join(save_path, TRAINING_CHECKPOINTS_DIR), distributed,
                                    background=background)
        return cls(manager, save_path, distributed, skip_save_model, skip_save_progress)

    def save_progress(self, pt: ProgressTracker) -> None:
        """latest.ckpt (weights, optimizer, scheduler, RNG, tracker) and training_progress.json."""
        if self.skip_save_progress:
            return
        pt.checkpoint_to_step[str(pt.checkpoint_number)] = pt.steps
        pt.checkpoint_to_epoch[str(pt.checkpoint_number)] = pt.epoch
        self.manager.save(progress=pt.to_dict())
        if self.distributed.is_coordinator():
            self.manager.save_text(self.progress_path, pt.to_json())

    def save_best(self, pt: ProgressTracker, model: torch.nn.Module) -> bool:
        """best.ckpt and model_weights; False when skip_save_model leaves nothing saved."""
        if self.skip_save_model:
            return False
        self.manager.save_best(progress_steps=pt.steps)
        if self.distributed.is_coordinator():
            self.manager.save_file(self.weights_path, model.state_dict())
        return True

    def load_best(self, model: torch.nn.Module) -> None:
        """After training, every rank continues with the best model (rank 0's copy, broadcast)."""
        if self.skip_save_model:
            return
        self.manager.wait()
        coordinator = self.distributed.is_coordinator()
        exists = self.distributed.broadcast_object(os.path.exists(self.manager.best_path) if coordinator else None,
                                                   name="hvd_trainer.best_exists")
        if not exists:
            return
        if coordinator:
            model.load_state_dict(load_checkpoint_file(self.manager.best_path, "cpu")["model"])
        self.distributed.sync_model(model)

    def wait(self) -> None:
        """Every checkpoint on disk; while another error is in flight, a write error is logged, not raised."""
        if sys.exc_info()[0] is None:
            self.manager.wait()
            return
        try:  # already failing: keep that error, but do not abandon a write in flight
            self.manager.wait()
        except CheckpointError as e:
            logger.error("%s", e)

    def last_good_hint(self) -> str:
        """A sentence for error messages: where the run can be resumed from."""
        latest = self.manager.latest_path
        if os.path.exists(latest):
            return f" The last good checkpoint is {latest}; --resume continues from it."
        return " No checkpoint had been saved yet."
