"""A trained model loaded back from its run directory, for evaluate and predict.

Only rank 0 reads the run directory (its config, metadata and weights); the others get the
config and metadata by broadcast and the weights through the strategy's sync, so the run
directory only needs to exist on rank 0's host. Whatever rank 0 finds wrong (a missing or
damaged file, weights that do not fit the model) is raised on every rank as the same error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict

from hvd_trainer.commands.shared import start_and_agree
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.distributed import DistributedStrategy
from hvd_trainer.errors import CheckpointError, ConfigError
from hvd_trainer.job import JobConfig
from hvd_trainer.run_layout import RunLayout


@dataclass(frozen=True)
class SavedRun:
    """What rank 0 read from a run directory, before any model is built."""

    job: JobConfig
    metadata: Dict[str, Any]
    layout: RunLayout


@dataclass(frozen=True)
class TrainedModel:
    job: JobConfig
    metadata: Dict[str, Any]
    model: Any
    """The model with the saved weights (model/model_weights) loaded."""
    strategy: DistributedStrategy
    layout: RunLayout
    """The run directory as rank 0 found it (only rank 0 may touch it)."""


def load_trained_model(model_path: str) -> TrainedModel:
    """The model in `model_path` (a run directory or its model/ directory), on every rank."""
    from hvd_trainer.models.feature_model import build_model

    strategy, saved = start_and_agree((), "hvd_trainer.saved_run", lambda: read_saved_run(model_path),
                                      lambda found: found.job.distributed)
    model = build_model(saved.job.model, saved.metadata)
    run_on_coordinator(strategy, "hvd_trainer.saved_weights", lambda: load_saved_weights(model, saved.layout.weights))
    # Horovod: rank 0 loaded the saved weights; every rank evaluates or predicts with them.
    strategy.sync_model(model)
    return TrainedModel(job=saved.job, metadata=saved.metadata, model=model, strategy=strategy, layout=saved.layout)


def read_saved_run(model_path: str) -> SavedRun:
    """Rank 0: the saved config and metadata of the run in `model_path`."""
    from hvd_trainer.data.preprocessing import load_metadata

    layout = RunLayout.of_path(model_path)
    if not os.path.exists(layout.hyperparameters):
        raise ConfigError(f"{model_path} is not a trained model: {layout.hyperparameters} is missing. Pass the run "
                          "directory that 'train' created (results/<experiment>_<model>) or its model/ directory.")
    return SavedRun(job=JobConfig.saved(layout.hyperparameters), metadata=load_metadata(layout.model_dir),
                    layout=layout)


def load_saved_weights(model, path: str) -> None:
    """Rank 0: the weights saved at `path` into `model`, or a CheckpointError when they do not fit it."""
    state = _saved_weights(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"The model weights {path} do not fit the model that model_hyperparameters.json "
                              f"describes ({_one_line(e)}); they come from another model. Pass the run "
                              "directory these weights were trained in, or train again.") from e


def _one_line(error: BaseException, limit: int = 300) -> str:
    """torch's several-line state_dict error, on one line and cut short (the message is one paragraph)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _saved_weights(path: str) -> Dict[str, Any]:
    import torch

    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing: the run saved no model (was it trained with --skip-save-model, "
                              "or did it stop before its first evaluation?).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise CheckpointError(f"The model weights {path} cannot be read ({type(e).__name__}: {e}).") from e
