"""Every path of a run directory, in one place (SPEC.md section 6, Ludwig's file names).

    results/<experiment_name>_<model_name>[_N]/     RunLayout.root
      description.json                              .description
      training_statistics.json                      .training_statistics
      evaluation_statistics.json                    .evaluation_statistics (evaluate's default)
      learning_curves.png                           .learning_curves (the built-in example)
      requeue_requested                             .requeue_marker
      model/                                        .model_dir
        model_hyperparameters.json                  .hyperparameters
        training_set_metadata.json                  .metadata
        model_weights                               .weights
        training_progress.json                      .progress
        training_checkpoints/                       .checkpoints_dir
          latest.ckpt  best.ckpt                    .latest_checkpoint, .best_checkpoint
        logs/                                       .logs_dir
          training/ validation/ test/               .log_dir(split)

Nothing here touches the file system except `RunLayout.new`, which has to create the
directory to claim its name.
"""
from __future__ import annotations

import os
from typing import Optional

MODEL_DIR = "model"
DESCRIPTION = "description.json"
TRAINING_STATISTICS = "training_statistics.json"
EVALUATION_STATISTICS = "evaluation_statistics.json"
LEARNING_CURVES = "learning_curves.png"
#: Written when training stopped for SIGTERM/SIGUSR1 with a checkpoint; a batch script that
#: cannot see the exit code (horovodrun reports 1 for any rank failure) can requeue on it.
REQUEUE_MARKER = "requeue_requested"
MODEL_HYPERPARAMETERS = "model_hyperparameters.json"
TRAINING_SET_METADATA = "training_set_metadata.json"
MODEL_WEIGHTS = "model_weights"
TRAINING_PROGRESS = "training_progress.json"
TRAINING_CHECKPOINTS_DIR = "training_checkpoints"
LATEST_CHECKPOINT = "latest.ckpt"
#: The latest checkpoint before the current one, kept for when latest turns out broken.
PREVIOUS_CHECKPOINT = "previous.ckpt"
BEST_CHECKPOINT = "best.ckpt"
LOGS_DIR = "logs"


def split_log_dir(logs_dir: str, split: str) -> str:
    """The TensorBoard directory of one split (training, validation, test) under logs/."""
    return os.path.join(logs_dir, split)


class RunLayout:
    """The paths of the run directory `root`; `root` is kept exactly as given.

    model_dir: where the model's files go, when not root/model (a Trainer's save_path can be any
    directory: the Python API's run has no run directory around it).
    """

    def __init__(self, root: str, model_dir: Optional[str] = None):
        self._root = root
        self._model_dir = model_dir if model_dir is not None else os.path.join(root, MODEL_DIR)

    # ---- finding or making a run directory ----------------------------------------------
    @classmethod
    def of_model_dir(cls, model_dir: str) -> "RunLayout":
        """The layout whose model/ directory is `model_dir` (what Trainer.train's save_path receives)."""
        model_dir = os.path.normpath(model_dir)
        return cls(os.path.dirname(model_dir), model_dir=model_dir)

    @classmethod
    def of_path(cls, path: str) -> "RunLayout":
        """Accept either a run directory or its model/ directory (as evaluate and predict do)."""
        path = path.rstrip("/") or "/"
        if os.path.basename(path) == MODEL_DIR and os.path.exists(os.path.join(path, MODEL_HYPERPARAMETERS)):
            return cls(os.path.dirname(path))
        return cls(path)

    @classmethod
    def new(cls, output_directory: str, experiment_name: str, model_name: str) -> "RunLayout":
        """A fresh <output>/<experiment>_<model>, suffixed _1, _2, ... when taken (created here)."""
        base = os.path.join(output_directory, f"{experiment_name}_{model_name}")
        path, n = base, 0
        while True:
            try:
                os.makedirs(path)
                return cls(path)
            except FileExistsError:
                n += 1
                path = f"{base}_{n}"

    # ---- the run directory ----------------------------------------------------------------
    @property
    def root(self) -> str:
        return self._root

    @property
    def description(self) -> str:
        return os.path.join(self._root, DESCRIPTION)

    @property
    def training_statistics(self) -> str:
        return os.path.join(self._root, TRAINING_STATISTICS)

    @property
    def evaluation_statistics(self) -> str:
        return os.path.join(self._root, EVALUATION_STATISTICS)

    @property
    def learning_curves(self) -> str:
        return os.path.join(self._root, LEARNING_CURVES)

    @property
    def requeue_marker(self) -> str:
        return os.path.join(self._root, REQUEUE_MARKER)

    # ---- model/ -----------------------------------------------------------------------------
    @property
    def model_dir(self) -> str:
        return self._model_dir

    @property
    def hyperparameters(self) -> str:
        return os.path.join(self.model_dir, MODEL_HYPERPARAMETERS)

    @property
    def metadata(self) -> str:
        return os.path.join(self.model_dir, TRAINING_SET_METADATA)

    @property
    def weights(self) -> str:
        return os.path.join(self.model_dir, MODEL_WEIGHTS)

    @property
    def progress(self) -> str:
        return os.path.join(self.model_dir, TRAINING_PROGRESS)

    @property
    def checkpoints_dir(self) -> str:
        return os.path.join(self.model_dir, TRAINING_CHECKPOINTS_DIR)

    @property
    def latest_checkpoint(self) -> str:
        return os.path.join(self.checkpoints_dir, LATEST_CHECKPOINT)

    @property
    def best_checkpoint(self) -> str:
        return os.path.join(self.checkpoints_dir, BEST_CHECKPOINT)

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.model_dir, LOGS_DIR)

    def log_dir(self, split: str) -> str:
        return split_log_dir(self.logs_dir, split)

    def __repr__(self) -> str:
        return f"RunLayout({self._root!r}, model_dir={self._model_dir!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunLayout) and (other._root, other._model_dir) == (self._root, self._model_dir)

    def __hash__(self) -> int:
        return hash((self._root, self._model_dir))
