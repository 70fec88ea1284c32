"""What one train() call saves, and when: a template over the CheckpointManager's files.

At every evaluation: latest.ckpt and training_progress.json (unless skip_save_progress). On a new
best validation value: best.ckpt and model_weights (unless skip_save_model). After training: the
best model back on every rank. Every rank calls each method (the RNG states are gathered into
latest.ckpt, best's existence is broadcast); only rank 0 touches the run directory. A write
that fails on rank 0 (a full disk, say) is deferred (see rank_errors.py): every rank raises
the same CheckpointError at the next agreement instead of rank 0 alone.
"""
from __future__ import annotations

import logging
import os
import sys

import torch

from hvd_trainer.checkpoint import CheckpointManager, load_checkpoint_file
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.distributed.base import DistributedStrategy
from hvd_trainer.errors import CheckpointError, ConfigError
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.rank_errors import DeferredErrors
from hvd_trainer.run_layout import RunLayout

logger = logging.getLogger(__name__)


def make_run_directory(path: str) -> None:
    """Create the model directory (rank 0), or a clear error naming it and what to do."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test.{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"The output directory {path} cannot be created or written ({e.strerror or e}). Choose a writable "
            "--output-directory (or save_path), or fix its permissions; nothing was trained.") from e


class Checkpointer:
    def __init__(self, manager: CheckpointManager, layout: RunLayout, distributed: DistributedStrategy,
                 errors: DeferredErrors, skip_save_model: bool = False, skip_save_progress: bool = False):
        self.manager = manager
        self.distributed = distributed
        self.errors = errors
        self.progress_path = layout.progress
        self.weights_path = layout.weights
        self.skip_save_model = skip_save_model
        self.skip_save_progress = skip_save_progress
        #: Whether latest.ckpt holds this run (resumed from, or saved since): known alike on every rank,
        #: unlike the file, which only rank 0's disk needs to have.
        self.has_latest = False

    @classmethod
    def for_run(cls, layout: RunLayout, distributed: DistributedStrategy, errors: DeferredErrors,
                model: torch.nn.Module, optimizer, scheduler, scaler=None, background: bool = True,
                skip_save_model: bool = False, skip_save_progress: bool = False) -> "Checkpointer":
        """Checkpoints of these objects in the layout's training_checkpoints/ (the strategy's handle: rank 0 writes).

        Rank 0 creates the model directory first; if it cannot, every rank raises the same error.
        """
        if distributed.elastic_joined() is None:  # a process joining an elastic job: rank 0 made it long ago
            run_on_coordinator(distributed, "hvd_trainer.make_run_directory", lambda: make_run_directory(layout.model_dir))
        # The uncompiled module: torch.compile's wrapper prefixes every state_dict key with _orig_mod.
        handle = distributed.create_checkpoint_handle(model, optimizer, scheduler, scaler=scaler)
        manager = CheckpointManager(handle, layout.checkpoints_dir, distributed, background=background)
        return cls(manager, layout, distributed, errors, skip_save_model, skip_save_progress)

    def save_progress(self, pt: ProgressTracker) -> None:
        """latest.ckpt (weights, optimizer, scheduler, RNG, tracker) and training_progress.json."""
        if self.skip_save_progress:
            return
        pt.checkpoint_to_step[str(pt.checkpoint_number)] = pt.steps
        pt.checkpoint_to_epoch[str(pt.checkpoint_number)] = pt.epoch
        with self.errors:
            self.manager.save(progress=pt.to_dict())
            if self.distributed.is_coordinator():
                self.manager.save_text(self.progress_path, pt.to_json())
        self.has_latest = True

    def save_best(self, pt: ProgressTracker, model: torch.nn.Module) -> bool:
        """best.ckpt and model_weights; False when skip_save_model leaves nothing saved."""
        if self.skip_save_model:
            return False
        with self.errors:
            self.manager.save_best(progress_steps=pt.steps)
            if self.distributed.is_coordinator():
                self.manager.save_file(self.weights_path, model.state_dict())
        return True

    def load_best(self, model: torch.nn.Module) -> None:
        """After training, every rank continues with the best model (rank 0's copy, broadcast)."""
        if self.skip_save_model:
            return
        if run_on_coordinator(self.distributed, "hvd_trainer.best_loaded", self._load_best_on_coordinator):
            self.distributed.sync_model(model)

    def _load_best_on_coordinator(self) -> bool:
        """Rank 0: best.ckpt into the model; False when there is none, a CheckpointError when it is broken."""
        self.manager.wait()  # best.ckpt may still be in the background writer's queue
        path = self.manager.best_path
        if not os.path.exists(path):
            return False
        # The handle's model is `model`: only the weights are restored, not the optimizer of that step.
        self.manager.checkpoint.apply(load_checkpoint_file(path, "cpu"), path, load_optimizer=False)
        return True

    def finish(self) -> None:
        """Every checkpoint on disk; a write that failed on rank 0 becomes every rank's error (one collective)."""
        if self.distributed.is_coordinator():
            with self.errors:
                self.manager.wait()
        self.errors.check()

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
        if self.has_latest:
            return f" The last good checkpoint is {self.manager.latest_path}; --resume continues from it."
        return " No checkpoint had been saved yet."
