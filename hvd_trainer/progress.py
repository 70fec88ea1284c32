"""ProgressTracker: everything about a run's progress that a resume needs, as JSON.

Field names follow Ludwig's ProgressTracker so that tools reading training_progress.json keep
working. Metric histories map split -> feature -> metric -> list of [epoch, step, value].
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


MetricHistory = Dict[str, Dict[str, List[List[float]]]]


@dataclass
class ProgressTracker:
    epoch: int = 0
    batch_size: int = 0
    steps: int = 0
    tune_checkpoint_num: int = 0
    checkpoint_number: int = 0
    #: Batches already taken in the current epoch (a resume continues from the next one).
    epoch_step: int = 0
    #: Samples of the epoch's order trained on before its batches were last dealt (elastic training: a
    #: world of another size took them); epoch_step counts batches from there.
    epoch_offset: int = 0
    #: World size of the run that wrote this tracker (a resume at another size logs it).
    world_size: int = 1
    total_tokens_used: int = 0
    elapsed_time: float = 0.0
    learning_rate: float = 0.0

    best_eval_metric_value: float = 0.0
    best_eval_metric_steps: int = 0
    best_eval_metric_epoch: int = 0
    best_eval_metric_checkpoint_number: int = 0
    last_improvement_steps: int = 0

    # reduce learning rate on plateau
    last_learning_rate_reduction_steps: int = 0
    last_learning_rate_reduction: int = 0
    num_reductions_learning_rate: int = 0
    best_reduce_learning_rate_eval_metric: float = math.inf
    last_reduce_learning_rate_eval_metric_improvement: int = 0

    # increase batch size on plateau
    last_increase_batch_size_steps: int = 0
    last_increase_batch_size: int = 0
    num_increases_batch_size: int = 0
    best_increase_batch_size_eval_metric: float = math.inf
    last_increase_batch_size_eval_metric_improvement: int = 0

    train_metrics: MetricHistory = field(default_factory=dict)
    validation_metrics: MetricHistory = field(default_factory=dict)
    test_metrics: MetricHistory = field(default_factory=dict)
    best_eval_train_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    best_eval_validation_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    best_eval_test_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    checkpoint_to_step: Dict[str, int] = field(default_factory=dict)
    checkpoint_to_epoch: Dict[str, int] = field(default_factory=dict)

    def metrics_of(self, split: str) -> MetricHistory:
        """The history of 'training' (or 'train'), 'validation' or 'test'."""
        return {"training": self.train_metrics, "train": self.train_metrics,
                "validation": self.validation_metrics, "test": self.test_metrics}[split]

    def append_metrics(self, split: str, metrics: Dict[str, Dict[str, float]]) -> None:
        history = self.metrics_of(split)
        for feature, values in metrics.items():
            for name, value in values.items():
                history.setdefault(feature, {}).setdefault(name, []).append([self.epoch, self.steps, float(value)])

    def last_metric(self, split: str, feature: str, metric: str) -> Optional[float]:
        series = self.metrics_of(split).get(feature, {}).get(metric)
        return series[-1][2] if series else None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, data: Dict[str, Any]) -> "ProgressTracker":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default, allow_nan=True)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def load_progress_file(path: str) -> ProgressTracker:
    with open(path) as fh:
        return ProgressTracker.load(json.load(fh))
