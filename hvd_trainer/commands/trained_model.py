"""A trained model loaded back from its run directory, for evaluate and predict."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict

from hvd_trainer.commands.shared import start_strategy
from hvd_trainer.distributed import DistributedStrategy
from hvd_trainer.errors import CheckpointError, ConfigError
from hvd_trainer.job import JobConfig
from hvd_trainer.run_layout import RunLayout


@dataclass(frozen=True)
class TrainedModel:
    job: JobConfig
    metadata: Dict[str, Any]
    model: Any
    """The model with the saved weights (model/model_weights) loaded."""
    strategy: DistributedStrategy
    layout: RunLayout


def load_trained_model(model_path: str) -> TrainedModel:
    """The model in `model_path` (a run directory or its model/ directory), on every rank."""
    from hvd_trainer.data.preprocessing import load_metadata
    from hvd_trainer.models.feature_model import build_model

    layout = RunLayout.of_path(model_path)
    if not os.path.exists(layout.hyperparameters):
        raise ConfigError(f"{model_path} is not a trained model: {layout.hyperparameters} is missing. Pass the run "
                          "directory that 'train' created (results/<experiment>_<model>) or its model/ directory.")
    job = JobConfig.saved(layout.hyperparameters)
    strategy = start_strategy(job.distributed)
    metadata = load_metadata(layout.model_dir)
    model = build_model(job.model, metadata)
    model.load_state_dict(_saved_weights(layout.weights))
    return TrainedModel(job=job, metadata=metadata, model=model, strategy=strategy, layout=layout)


def _saved_weights(path: str) -> Dict[str, Any]:
    import torch

    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing: the run saved no model (was it trained with --skip-save-model, "
                              "or did it stop before its first evaluation?).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise CheckpointError(f"The model weights {path} cannot be read ({type(e).__name__}: {e}).") from e
