"""Best-model tracking and early stopping: a pure decision on the synchronised metrics, then one vote.

Every rank holds the same validation metrics (they are reduced over all ranks' data), so every
rank reaches the same verdict on its own; only what can differ between ranks (a callback that
wants to stop on one rank) needs a collective: the trainer's vote (Control.vote) after each evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hvd_trainer.errors import ConfigError
from hvd_trainer.features import higher_is_better
from hvd_trainer.plateau import improves
from hvd_trainer.progress import ProgressTracker


SPLITS = ("training", "validation", "test")


def initial_best(metric: str) -> float:
    """The best value before any evaluation: anything beats it."""
    return -math.inf if higher_is_better(metric) else math.inf


@dataclass(frozen=True)
class Verdict:
    """What one evaluation means for the best model and for early stopping."""

    value: float
    previous_best: float
    improved: bool
    #: Steps since the last improvement, counting this evaluation's.
    steps_since_improvement: int
    should_stop: bool
    #: Why training stops (metric, its best value and step), or "" when it goes on.
    reason: str


def validation_value(pt: ProgressTracker, field: str, metric: str) -> float:
    """The watched metric's latest validation value; a clear error when the model has no such metric."""
    value = pt.last_metric("validation", field, metric)
    if value is None:
        available = {f: sorted(m) for f, m in pt.validation_metrics.items()}
        raise ConfigError(
            f"trainer.validation_field/validation_metric is {field}/{metric}, but the validation "
            f"metrics are {available}. Choose a feature and metric from that list."
        )
    return value


def judge(pt: ProgressTracker, field: str, metric: str, early_stop: int, early_stopping_steps: int) -> Verdict:
    """The verdict on the latest evaluation; changes nothing (see record_best)."""
    value = validation_value(pt, field, metric)
    improved = improves(value, pt.best_eval_metric_value, higher_is_better(metric))
    since = 0 if improved else pt.steps - pt.last_improvement_steps
    stop = early_stop > 0 and since >= early_stopping_steps
    reason = (f"validation {metric} on {field} has not improved for {early_stop} evaluation(s) "
              f"(best {pt.best_eval_metric_value:.6g} at step {pt.best_eval_metric_steps})") if stop else ""
    return Verdict(value, pt.best_eval_metric_value, improved, since, stop, reason)


def record_best(pt: ProgressTracker, value: float) -> None:
    """The latest evaluation is the new best: remember its value, step and every split's metrics."""
    pt.best_eval_metric_value = value
    pt.best_eval_metric_steps = pt.steps
    pt.best_eval_metric_epoch = pt.epoch
    pt.best_eval_metric_checkpoint_number = pt.checkpoint_number
    pt.last_improvement_steps = pt.steps
    for split, store in zip(SPLITS, (pt.best_eval_train_metrics, pt.best_eval_validation_metrics,
                                     pt.best_eval_test_metrics)):
        store.clear()
        store.update({f: {m: series[-1][2] for m, series in ms.items()} for f, ms in pt.metrics_of(split).items()})
