"""The model contract that the trainer relies on.

A model takes a dict of input tensors and returns a dict of logits, one per output feature.
Losses, predictions and metrics come from its OutputFeature objects, so every model (the
config-driven feature model, or a user's module wrapped in ModuleAdapter) reports the same
metric names, and metrics are computed over all ranks' data by `get_metrics(distributed)`.
"""
from __future__ import annotations

import abc
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from hvd_trainer.metrics import Metric, compute_metrics
from hvd_trainer.models.columns import column_tensor
from hvd_trainer.models.outputs import LOSS, OutputFeature

COMBINED = "combined"


class InputFeature(abc.ABC):
    """One model input: how a numpy column becomes a tensor, and a sample batch of it."""

    def __init__(self, name: str):
        self.name = name

    @abc.abstractmethod
    def create_sample_input(self, batch_size: int) -> torch.Tensor: ...

    def input_tensor(self, column: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(column)


class TensorInput(InputFeature):
    """A dense input of a fixed per-sample shape (what a user's own module usually takes)."""

    def __init__(self, name: str, shape: Sequence[int], dtype: torch.dtype = torch.float32):
        super().__init__(name)
        self.shape = tuple(shape)
        self.dtype = dtype

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        if self.dtype.is_floating_point:
            return torch.randn((batch_size,) + self.shape, dtype=self.dtype)
        return torch.zeros((batch_size,) + self.shape, dtype=self.dtype)

    def input_tensor(self, column):
        return column_tensor(column, self.dtype)


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
        """eval_loss plus the regularisation penalty on all trainable weights."""
        loss, per_feature = self.eval_loss(targets, outputs)
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

    def _metrics_state(self) -> "BatchMetrics":
        # Looked up in __dict__: nn.Module's attribute fallbacks cost microseconds per step.
        state = self.__dict__.get("_batch_metrics")
        if state is None:
            self.reset_metrics()
            state = self.__dict__["_batch_metrics"]
        return state

    def metric_names(self) -> Dict[str, Tuple[str, ...]]:
        names = {name: tuple(f.create_metrics()) for name, f in self.output_features.items()}
        names[COMBINED] = (LOSS,)
        return names

    # ---- batches -------------------------------------------------------------------------
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


class BatchMetrics:
    """The metrics of one output-feature set, fed batch by batch.

    Batches are buffered and their metrics computed together: each metric update is a handful
    of small tensor ops whose cost is mostly per-call overhead (about 0.25 ms for a category
    output, a third of a small MLP's training step); once per 256 batches that part vanishes
    and what remains is the per-row work (argmax, gather), ~1-2% of a small MLP's step.
    """

    FLUSH_BATCHES = 256
    #: ...or sooner, once the buffered logits hold this many numbers (16 MB of float32), so that
    #: large batches or many classes never hold much memory.
    FLUSH_ELEMENTS = 1 << 22

    def __init__(self, output_features: Mapping[str, OutputFeature]):
        from hvd_trainer.metrics import MeanLoss

        self.output_features = output_features
        self.metrics: Dict[str, Dict[str, Metric]] = {
            name: feature.create_metrics() for name, feature in output_features.items()
        }
        self.metrics[COMBINED] = {LOSS: MeanLoss()}
        self._names = tuple(output_features)
        self._clear()

    def _clear(self) -> None:
        # One list per quantity (not a tuple of dicts per batch): fewer objects per step.
        self._combined: List[torch.Tensor] = []
        self._losses: Dict[str, List[torch.Tensor]] = {n: [] for n in self._names}
        self._logits: Dict[str, List[torch.Tensor]] = {n: [] for n in self._names}
        self._targets: Dict[str, List[torch.Tensor]] = {n: [] for n in self._names}
        self._pending_elements = 0

    def add(self, targets: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor],
            losses: Tuple[torch.Tensor, Mapping[str, torch.Tensor]]) -> None:
        combined, per_feature = losses
        # Detached: a buffered tensor must not keep the step's autograd graph alive.
        self._combined.append(combined.detach())
        for name in self._names:
            logits = outputs[name].detach()
            self._logits[name].append(logits)
            self._targets[name].append(targets[name])
            self._losses[name].append(per_feature[name].detach())
            self._pending_elements += logits.numel()
        if len(self._combined) >= self.FLUSH_BATCHES or self._pending_elements >= self.FLUSH_ELEMENTS:
            self.flush()

    def flush(self) -> None:
        if not self._combined:
            return
        combined, losses, logits, targets = self._combined, self._losses, self._logits, self._targets
        self._clear()
        with torch.no_grad():
            counts = torch.tensor([float(t.shape[0]) for t in targets[self._names[0]]])
            total = counts.sum()
            self.metrics[COMBINED][LOSS].update((torch.stack(combined).float() * counts).sum(), total)
            for name, feature in self.output_features.items():
                metrics = self.metrics[name]
                metrics[LOSS].update((torch.stack(losses[name]).float() * counts).sum(), total)
                feature.update_metrics(metrics, _cat(logits[name]), _cat(targets[name]))


def _cat(tensors: List[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class ModuleAdapter(BaseModel):
    """Train your own nn.Module with hvd_trainer.

    >>> net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    >>> model = ModuleAdapter(net, inputs=[TensorInput("x", (64,))], outputs=[CategoryOutput("y", 10)])

    The module gets the single input tensor (or the dict of inputs when there are several) and
    returns logits (or a dict of logits keyed by output name when there are several outputs).
    """

    def __init__(self, module: nn.Module, inputs: Sequence[InputFeature], outputs: Sequence[OutputFeature]):
        super().__init__()
        self.module = module
        self.input_features = {f.name: f for f in inputs}
        self.output_features = {f.name: f for f in outputs}
        self._single_input = next(iter(self.input_features)) if len(self.input_features) == 1 else None
        self._single_output = next(iter(self.output_features)) if len(self.output_features) == 1 else None

    def forward(self, inputs):
        out = self.module(inputs[self._single_input] if self._single_input else inputs)
        if isinstance(out, torch.Tensor):
            if self._single_output is None:
                raise TypeError("The module returned one tensor, but the model has several outputs; return a dict of logits keyed by output name.")
            return {self._single_output: out}
        return out
