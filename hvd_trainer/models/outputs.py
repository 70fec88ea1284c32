"""Output features: loss, predictions, metrics and sample targets for one model output.

Shared by the config-driven feature model and by ModuleAdapter, so that a user's own module
gets the same losses, metrics and metric names as a YAML-configured model.
"""
from __future__ import annotations

import abc
from typing import Dict

import torch
import torch.nn.functional as F

from hvd_trainer.metrics import (
    Accuracy,
    HitsAtK,
    MeanAbsoluteError,
    MeanLoss,
    MeanSquaredError,
    Metric,
    R2Score,
    RocAuc,
)
from hvd_trainer.models.columns import column_tensor

LOSS = "loss"


class OutputFeature(abc.ABC):
    """One model output: its decoder size, loss, metrics and target format."""

    type: str = "abstract"

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

    @abc.abstractmethod
    def create_metrics(self) -> Dict[str, Metric]:
        """Fresh metrics; 'loss' is always among them."""

    @abc.abstractmethod
    def create_sample_output(self, batch_size: int) -> torch.Tensor:
        """A target batch of the right shape and dtype (batch size tuning uses it)."""

    @abc.abstractmethod
    def update_metrics(self, metrics: Dict[str, Metric], logits: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one batch into metrics (except 'loss', which the model adds)."""

    def target_tensor(self, column) -> torch.Tensor:
        """Turn a numpy column into a target tensor of this feature's dtype."""
        return torch.as_tensor(column)


class CategoryOutput(OutputFeature):
    type = "category"

    def __init__(self, name: str, num_classes: int, loss_weight: float = 1.0, top_k: int = 3):
        super().__init__(name, loss_weight)
        self.num_classes = num_classes
        self.top_k = top_k

    @property
    def output_size(self) -> int:
        return self.num_classes

    def loss(self, logits, target):
        return F.cross_entropy(logits.float(), target.long(), reduction="none")

    def mean_loss(self, logits, target):
        return F.cross_entropy(logits.float(), target.long())

    def predictions(self, logits):
        probs = torch.softmax(logits.float(), dim=-1)
        return {"predictions": probs.argmax(-1), "probabilities": probs}

    def create_metrics(self):
        return {LOSS: MeanLoss(), "accuracy": Accuracy(), "hits_at_k": HitsAtK(self.top_k)}

    def update_metrics(self, metrics, logits, target):
        target = target.long()
        metrics["accuracy"].update(logits.argmax(-1), target)
        metrics["hits_at_k"].update(logits, target)

    def create_sample_output(self, batch_size):
        return torch.randint(0, self.num_classes, (batch_size,))

    def target_tensor(self, column):
        return column_tensor(column, torch.int64)


class BinaryOutput(OutputFeature):
    type = "binary"

    def __init__(self, name: str, loss_weight: float = 1.0, threshold: float = 0.5):
        super().__init__(name, loss_weight)
        self.threshold = threshold

    @property
    def output_size(self) -> int:
        return 1

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), target.float().reshape(-1), reduction="none")

    def mean_loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), target.float().reshape(-1))

    def predictions(self, logits):
        probs = torch.sigmoid(logits.float().reshape(-1))
        return {"predictions": probs >= self.threshold, "probabilities": probs}

    def create_metrics(self):
        return {LOSS: MeanLoss(), "accuracy": Accuracy(), "roc_auc": RocAuc()}

    def update_metrics(self, metrics, logits, target):
        probs = torch.sigmoid(logits.float().reshape(-1))
        target = target.reshape(-1)
        metrics["accuracy"].update((probs >= self.threshold).to(target.dtype), target)
        metrics["roc_auc"].update(probs, target)

    def create_sample_output(self, batch_size):
        return torch.randint(0, 2, (batch_size,)).float()

    def target_tensor(self, column):
        return column_tensor(column, torch.float32)


class NumberOutput(OutputFeature):
    type = "number"

    @property
    def output_size(self) -> int:
        return 1

    def loss(self, logits, target):
        return (logits.float().reshape(-1) - target.float().reshape(-1)) ** 2

    def predictions(self, logits):
        return {"predictions": logits.float().reshape(-1)}

    def create_metrics(self):
        return {LOSS: MeanLoss(), "mean_squared_error": MeanSquaredError(), "mean_absolute_error": MeanAbsoluteError(), "r2": R2Score()}

    def update_metrics(self, metrics, logits, target):
        preds, target = logits.float().reshape(-1), target.float().reshape(-1)
        metrics["mean_squared_error"].update(preds, target)
        metrics["mean_absolute_error"].update(preds, target)
        metrics["r2"].update(preds, target)

    def create_sample_output(self, batch_size):
        return torch.randn(batch_size)

    def target_tensor(self, column):
        return column_tensor(column, torch.float32)


OUTPUT_TYPES = {"category": CategoryOutput, "binary": BinaryOutput, "number": NumberOutput}


def higher_is_better(metric_name: str) -> bool:
    """Whether a larger value of this metric is an improvement."""
    return metric_name not in ("loss", "mean_squared_error", "mean_absolute_error", "root_mean_squared_error")

