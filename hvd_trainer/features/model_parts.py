"""What a feature gives a model: an InputFeature (column -> tensor -> encoding) or an
OutputFeature (logits -> loss, predictions, metrics).

The type modules implement these for their types; hvd_trainer.models builds models from them,
and a user's own module (ModuleAdapter) uses the same output features, so that it reports the
same losses and metric names as a YAML-configured model.
"""
from __future__ import annotations

import abc
from typing import Dict, Tuple, Type

import numpy as np
import torch
from torch import nn

from hvd_trainer.features.columns import column_tensor
from hvd_trainer.metrics import MeanLoss, Metric


class InputFeature(abc.ABC):
    """One model input: how a numpy column becomes a tensor, and a sample batch of it."""

    def __init__(self, name: str):
        self.name = name

    @abc.abstractmethod
    def create_sample_input(self, batch_size: int) -> torch.Tensor: ...

    def input_tensor(self, column: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(column)


class Passthrough(nn.Module):
    """[batch] values -> [batch, 1] encodings."""

    output_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().reshape(-1, 1)


class ScalarInput(InputFeature):
    """A float32 column, one value per row (already normalised by preprocessing): its own encoding.

    The feature model stacks every scalar input into one [batch, k] block instead of encoding
    each one by itself.
    """

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.float32)

    def build_encoder(self) -> nn.Module:
        return Passthrough()


class OutputFeature(abc.ABC):
    """One model output: its decoder size, loss, metrics and target format."""

    type: str = "abstract"
    #: The metrics this output reports, in report order; each metric class carries its name and
    #: whether higher is better (hvd_trainer.features.higher_is_better reads them from here).
    metric_types: Tuple[Type[Metric], ...] = (MeanLoss,)

    def __init__(self, name: str, loss_weight: float = 1.0):
        self.name = name
        self.loss_weight = loss_weight

    @property
    @abc.abstractmethod
    def output_size(self) -> int:
        """Width of the logits the model must produce for this feature."""

    @abc.abstractmethod
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss, shape [batch]."""

    def mean_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss (the training step's hot path: one fused op where torch has one)."""
        return self.loss(logits, target).mean()

    @abc.abstractmethod
    def predictions(self, logits: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Decoded predictions (e.g. class and probabilities) for predict and metrics."""

    def create_metrics(self) -> Dict[str, Metric]:
        """Fresh metrics, keyed by name; 'loss' is always among them."""
        return {metric_type.name: self.new_metric(metric_type) for metric_type in self.metric_types}

    def new_metric(self, metric_type: Type[Metric]) -> Metric:
        """A fresh metric of one of metric_types (override to pass settings, e.g. hits_at_k's k)."""
        return metric_type()

    @abc.abstractmethod
    def create_sample_output(self, batch_size: int) -> torch.Tensor:
        """A target batch of the right shape and dtype (batch size tuning uses it)."""

    @abc.abstractmethod
    def update_metrics(self, metrics: Dict[str, Metric], logits: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one batch into metrics (except 'loss', which the model adds)."""

    def target_tensor(self, column) -> torch.Tensor:
        """Turn a numpy column into a target tensor of this feature's dtype."""
        return torch.as_tensor(column)


def confidence_penalty(probabilities: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Ludwig's mean_confidence_penalty: 1 - (the batch's largest -p*log p per class, summed) / log(classes).

    Written from its definition in ludwig.utils.loss_utils, including that it takes the maximum
    over the batch (dim 0), so its value depends on the batch as a whole.
    """
    max_entropy = torch.log(torch.tensor(float(num_classes), device=probabilities.device))
    entropy_per_class = torch.max(-probabilities * torch.log(torch.clamp(probabilities, 1e-10, 1)), dim=0).values
    entropy = torch.sum(entropy_per_class, -1)
    return torch.mean((max_entropy - entropy) / max_entropy)
