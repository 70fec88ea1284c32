"""The output directory layout, with Ludwig's file names (SPEC.md section 6).

results/<experiment_name>_<model_name>[_N]/
  description.json  training_statistics.json
  model/  model_hyperparameters.json  training_set_metadata.json  model_weights
          training_progress.json  training_checkpoints/  logs/{training,validation,test}/
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import sys
from typing import Any, Dict

from hvd_trainer.checkpoint import atomic_write_text

MODEL_DIR = "model"
MODEL_HYPERPARAMETERS = "model_hyperparameters.json"
MODEL_WEIGHTS = "model_weights"
DESCRIPTION = "description.json"
TRAINING_STATISTICS = "training_statistics.json"
#: Written when training stopped for SIGTERM/SIGUSR1 with a checkpoint; a batch script that
#: cannot see the exit code (horovodrun reports 1 for any rank failure) can requeue on it.
REQUEUE_MARKER = "requeue_requested"


def new_run_directory(output_directory: str, experiment_name: str, model_name: str) -> str:
    """A fresh <output>/<experiment>_<model>, suffixed _1, _2, ... when taken (created here)."""
    base = os.path.join(output_directory, f"{experiment_name}_{model_name}")
    path, n = base, 0
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}_{n}"


def model_dir(run_directory: str) -> str:
    return os.path.join(run_directory, MODEL_DIR)


def model_hyperparameters_path(run_directory: str) -> str:
    return os.path.join(run_directory, MODEL_DIR, MODEL_HYPERPARAMETERS)


def run_directory_of(path: str) -> str:
    """Accept either a run directory or its model/ directory."""
    path = path.rstrip("/") or "/"
    if os.path.basename(path) == MODEL_DIR and os.path.exists(os.path.join(path, MODEL_HYPERPARAMETERS)):
        return os.path.dirname(path)
    return path


def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def description(config: Dict[str, Any], args, world_size: int) -> Dict[str, Any]:
    import torch

    try:
        import horovod

        horovod_version = horovod.__version__
    except ImportError:
        horovod_version = None
    from hvd_trainer import __version__

    return {
        "command": " ".join(sys.argv),
        "start_time": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "world_size": world_size,
        "random_seed": getattr(args, "random_seed", None),
        "data": {k: getattr(args, k, None) for k in ("dataset", "training_set", "validation_set", "test_set")},
        "versions": {"hvd_trainer": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "horovod": horovod_version},
        "config": config,
    }


def write_requeue_marker(run_directory: str, step: int) -> None:
    atomic_write_text(os.path.join(run_directory, REQUEUE_MARKER), f"checkpoint saved at step {step}\n")


def clear_requeue_marker(run_directory: str) -> None:
    try:
        os.unlink(os.path.join(run_directory, REQUEUE_MARKER))
    except FileNotFoundError:
        pass
