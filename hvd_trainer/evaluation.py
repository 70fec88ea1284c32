"""One evaluation period: the metrics of the training, validation and test splits over all ranks.

Training metrics are the ones accumulated by the train steps since the last evaluation, or a
full pass over the training set with `evaluate_training_set`. Validation and test run through a
Predictor over each rank's shard and are reduced over all ranks, so every rank holds the same
numbers (and takes the same decisions from them). Rank 0 writes them to TensorBoard.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import torch

from hvd_trainer.config import TrainerConfig
from hvd_trainer.data.dataset import Dataset
from hvd_trainer.distributed.base import DistributedStrategy
from hvd_trainer.errors import TrainingDivergedError
from hvd_trainer.models.base import BaseModel
from hvd_trainer.predictor import Predictor
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.summary import write_eval_summary

Metrics = Dict[str, Dict[str, float]]


class Evaluator:
    def __init__(self, model: BaseModel, compiled_model: torch.nn.Module, distributed: DistributedStrategy,
                 device: torch.device, config: TrainerConfig):
        self.model = model
        self.compiled_model = compiled_model
        self.distributed = distributed
        self.device = device
        self.config = config

    def evaluate(self, dataset: Dataset, split: str, pt: ProgressTracker, batch_size: int) -> Metrics:
        """Metrics of the model on `dataset`, over every rank's shard; appended to the history."""
        predictor = Predictor(self.compiled_model, self.model, batch_size, self.distributed, self.device)
        metrics = predictor.batch_evaluation(dataset)
        pt.append_metrics(split, metrics)
        return metrics

    def run(self, pt: ProgressTracker, training_set: Dataset, datasets: Mapping[str, Optional[Dataset]],
            writers: Mapping[str, object], batch_size: int, notify: Callable[[str], None]) -> Dict[str, Metrics]:
        """Every split's metrics, as tables by split; notify(hook) runs the callbacks' on_{split}_start/end."""
        tables = {"training": self._training_metrics(pt, training_set, batch_size)}
        write_eval_summary(writers["training"], tables["training"], pt.steps)
        if not self.config.skip_all_evaluation:
            for split, dataset in datasets.items():
                if dataset is None:
                    continue
                notify(f"on_{split}_start")
                tables[split] = self.evaluate(dataset, split, pt, batch_size)
                write_eval_summary(writers[split], tables[split], pt.steps)
                notify(f"on_{split}_end")
        self.model.reset_metrics()  # training metrics of the next evaluation cover the steps since this one
        self.compiled_model.train()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return tables

    def _training_metrics(self, pt: ProgressTracker, training_set: Dataset, batch_size: int) -> Metrics:
        if self.config.skip_all_evaluation:
            return {}
        if self.config.evaluate_training_set:
            return self.evaluate(training_set, "training", pt, batch_size)
        metrics = self.model.get_metrics(self.distributed)
        pt.append_metrics("training", metrics)
        return metrics


def check_weights_finite(model: torch.nn.Module, steps: int, resume_hint: str) -> None:
    """A clear error when a weight became NaN or infinite.

    Weights are identical on every rank (same averaged gradients), so each rank reaches the same
    verdict without a collective.
    """
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise TrainingDivergedError(
                f"The model weight {name} became NaN or infinite by step {steps}. "
                "Lower trainer.learning_rate or set trainer.gradient_clipping." + resume_hint)
