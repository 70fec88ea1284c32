"""Build a torch optimizer from OptimizerConfig."""
from __future__ import annotations

import torch

from hvd_trainer.config import OptimizerConfig

OPTIMIZER_CLASSES = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "lbfgs": torch.optim.LBFGS,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
}


def create_optimizer(model: torch.nn.Module, config: OptimizerConfig, learning_rate: float) -> torch.optim.Optimizer:
    """The optimizer named by config.type over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZER_CLASSES[config.type](params, lr=learning_rate, **config.torch_kwargs())
