"""The model contract that the trainer relies on.

A model takes a dict of input tensors and returns a dict of logits, one per output feature.
Losses, predictions and metrics come from its OutputFeature objects, so every model (the
config-driven feature model, or a user's module wrapped in ModuleAdapter) reports the same
metric names, and metrics are computed over all ranks' data by `get_metrics(distributed)`.
"""
from __future__ import annotations

import abc
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from hvd_trainer.errors import DataError
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.metrics import compute_metrics
from hvd_trainer.models.batch_metrics import COMBINED, BatchMetrics

__all__ = ["AUXILIARY_LOSS", "COMBINED", "BaseModel", "to_device"]

#: Key of forward()'s result under which a model may return a loss of its own (TabNet's sparsity
#: loss), added to the training loss as Ludwig adds its modules' losses. Feature names cannot
#: start with "__", so it never clashes with an output; evaluation losses and metrics ignore it.
AUXILIARY_LOSS = "__auxiliary_loss__"


class BaseModel(nn.Module, abc.ABC):
    """What hvd_trainer.Trainer trains. Subclasses set input_features and output_features."""

    input_features: Dict[str, InputFeature]
    output_features: Dict[str, OutputFeature]

    @abc.abstractmethod
    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Logits for every output feature, keyed by its name."""

    # ---- losses --------------------------------------------------------------------------
    def eval_loss(
        self, targets: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(weighted sum of the features' mean losses, {feature: mean loss})."""
        per_feature = {}
        total = None
        for name, feature in self.output_features.items():
            loss = feature.mean_loss(outputs[name], targets[name])
            per_feature[name] = loss
            # A weight of 1 (the usual single output) would cost a multiply per step for nothing.
            weighted = loss if feature.loss_weight == 1 else loss * feature.loss_weight
            total = weighted if total is None else total + weighted
        return total, per_feature

    def train_loss(
        self,
        targets: Mapping[str, torch.Tensor],
        outputs: Mapping[str, torch.Tensor],
        regularization_type: Optional[str] = None,
        regularization_lambda: float = 0.0,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """eval_loss plus the model's own loss (if forward returned one) plus the regularisation penalty."""
        loss, per_feature = self.eval_loss(targets, outputs)
        auxiliary = outputs.get(AUXILIARY_LOSS)
        if auxiliary is not None:
            loss = loss + auxiliary
        if regularization_lambda and regularization_type:
            loss = loss + regularization_lambda * self.regularization_penalty(regularization_type)
        return loss, per_feature

    def regularization_penalty(self, regularization_type: str) -> torch.Tensor:
        params = [p for p in self.parameters() if p.requires_grad]
        l1 = lambda: sum(p.abs().sum() for p in params)  # noqa: E731
        l2 = lambda: sum((p * p).sum() for p in params)  # noqa: E731
        if regularization_type == "l1":
            return l1()
        if regularization_type == "l2":
            return l2()
        if regularization_type == "l1_l2":
            return l1() + l2()
        raise ValueError(f"Unknown regularization_type {regularization_type!r}; use l1, l2 or l1_l2.")

    # ---- metrics -------------------------------------------------------------------------
    def reset_metrics(self) -> None:
        self._batch_metrics = BatchMetrics(self.output_features)

    def update_metrics(
        self,
        targets: Mapping[str, torch.Tensor],
        outputs: Mapping[str, torch.Tensor],
        losses: Optional[Tuple[torch.Tensor, Mapping[str, torch.Tensor]]] = None,
    ) -> None:
        """Fold one batch into the metrics. `losses` = (combined, per feature) if already known."""
        if losses is None:
            with torch.no_grad():
                losses = self.eval_loss(targets, outputs)
        self._metrics_state().add(targets, outputs, losses)

    def get_metrics(self, distributed=None) -> Dict[str, Dict[str, float]]:
        """{feature: {metric: value}} over every rank's batches since reset_metrics()."""
        state = self._metrics_state()
        state.flush()
        return compute_metrics(state.metrics, distributed)

    def _metrics_state(self) -> BatchMetrics:
        # Looked up in __dict__: nn.Module's attribute fallbacks cost microseconds per step.
        state = self.__dict__.get("_batch_metrics")
        if state is None:
            self.reset_metrics()
            state = self.__dict__["_batch_metrics"]
        return state

    # ---- batches -------------------------------------------------------------------------
    def check_columns(self, dataset, targets: bool = True):
        """The dataset itself, or a DataError naming the feature columns it lacks (before any batch is taken)."""
        needed = list(self.input_features) + (list(self.output_features) if targets else [])
        missing = [name for name in needed if name not in dataset.columns]
        if missing:
            raise DataError(
                f"The dataset {dataset.name} has no column {', '.join(repr(m) for m in missing)}, which the model's "
                f"features need; its columns are {', '.join(repr(c) for c in dataset.columns)}. Give the Dataset a "
                "column per input and output feature, named as the features are.")
        return dataset

    def prepare_dataset(self, dataset):
        """The dataset in the layout this model batches fastest (default: as it is).

        Called by the trainer and the predictor before batching; the result must hold the same
        rows and give the same tensors through input_tensors/target_tensors.
        """
        return dataset

    def input_tensors(self, batch: Mapping[str, np.ndarray], device) -> Dict[str, torch.Tensor]:
        return to_device({n: f.input_tensor(batch[n]) for n, f in self.input_features.items()}, device)

    def target_tensors(self, batch: Mapping[str, np.ndarray], device) -> Dict[str, torch.Tensor]:
        return to_device({n: f.target_tensor(batch[n]) for n, f in self.output_features.items()}, device)

    def create_sample_batch(self, batch_size: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        inputs = {n: f.create_sample_input(batch_size) for n, f in self.input_features.items()}
        targets = {n: f.create_sample_output(batch_size) for n, f in self.output_features.items()}
        return inputs, targets


def to_device(tensors: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    """A batch's tensors on `device`. Batches are built on the CPU; there, .to() would be a
    no-op call per tensor and step, so the dict is returned as it is."""
    if device == "cpu" or getattr(device, "type", None) == "cpu":
        return tensors
    return {n: t.to(device, non_blocking=True) for n, t in tensors.items()}
