"""BatchMetrics: the metrics of a model's outputs, fed batch by batch and computed in bulk.

Batches are buffered and their metrics computed together: each metric update is a handful
of small tensor ops whose cost is mostly per-call overhead (about 0.25 ms for a category
output, a third of a small MLP's training step); once per 256 batches that part vanishes
and what remains is the per-row work (argmax, gather), ~1-2% of a small MLP's step.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch

from hvd_trainer.features.model_parts import OutputFeature
from hvd_trainer.metrics import LOSS, MeanLoss, Metric

#: The pseudo-feature under which the weighted sum of all outputs' losses is reported.
COMBINED = "combined"


class BatchMetrics:
    """The metrics of one output-feature set, plus the combined loss."""

    FLUSH_BATCHES = 256
    #: ...or sooner, once the buffered logits hold this many numbers (16 MB of float32), so that
    #: large batches or many classes never hold much memory.
    FLUSH_ELEMENTS = 1 << 22

    def __init__(self, output_features: Mapping[str, OutputFeature]):
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
