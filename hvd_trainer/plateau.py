"""Plateau decisions as pure functions, shared by reduce-LR-on-plateau, increase-batch-size-on-
plateau and best-model tracking. Every rank computes them on the same synchronised metrics, so
they agree without a collective."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Tuple

from hvd_trainer.errors import ConfigError
from hvd_trainer.features import higher_is_better


def improves(value: Optional[float], best: float, higher_better: bool) -> bool:
    """Whether value beats best. NaN never improves. The progress tracker starts plateau bests
    at +inf ("nothing seen yet", right for lower-is-better metrics), so for higher-is-better
    metrics +inf also means "no best yet"."""
    if value is None or math.isnan(value):
        return False
    if higher_better:
        return best == math.inf or value > best
    return value < best


class Plateau(NamedTuple):
    """The counters Ludwig keeps per plateau rule (stored in the progress tracker)."""

    best: float
    evals_since_improvement: int
    evals_since_action: int


def plateau_update(value: float, state: Plateau, patience: int, higher_better: bool) -> Tuple[Plateau, bool]:
    """Fold one evaluation in; True means act now (reduce the LR, grow the batch).

    Ludwig's rule: act once `patience` evaluations have passed both without improvement and
    since the last action, so actions are spaced at least `patience` evaluations apart.
    """
    if improves(value, state.best, higher_better):
        best, since_improvement = value, 0
    else:
        best, since_improvement = state.best, state.evals_since_improvement + 1
    since_action = state.evals_since_action + 1
    act = since_improvement >= patience and since_action >= patience
    return Plateau(best, since_improvement, 0 if act else since_action), act


def increase_batch_size_on_plateau(pt, cfg, validation_field: str,
                                   higher_better: Callable[[str], bool] = higher_is_better) -> Optional[int]:
    """Ludwig's increase_batch_size_on_plateau rule, folded over one evaluation of the watched metric.

    Updates the tracker's counters (and its batch_size when the rule acts); returns the old batch
    size when the batch grew, else None. cfg is the trainer config.
    """
    if (pt.num_increases_batch_size >= cfg.increase_batch_size_on_plateau
            or pt.batch_size >= cfg.increase_batch_size_on_plateau_max):
        return None
    split, metric = cfg.increase_batch_size_eval_split, cfg.increase_batch_size_eval_metric
    value = pt.last_metric(split, validation_field, metric)
    if value is None:
        raise ConfigError(f"trainer.increase_batch_size_eval_metric {metric!r} on split {split!r} is not among "
                          f"the metrics of {validation_field}; choose one the model reports (e.g. loss).")
    state, act = plateau_update(
        value,
        Plateau(pt.best_increase_batch_size_eval_metric, pt.last_increase_batch_size_eval_metric_improvement,
                pt.last_increase_batch_size),
        cfg.increase_batch_size_on_plateau_patience, higher_better(metric))
    (pt.best_increase_batch_size_eval_metric, pt.last_increase_batch_size_eval_metric_improvement,
     pt.last_increase_batch_size) = state
    if not act:
        return None
    old = pt.batch_size
    pt.batch_size = min(int(old * cfg.increase_batch_size_on_plateau_rate), cfg.increase_batch_size_on_plateau_max)
    pt.num_increases_batch_size += 1
    pt.last_increase_batch_size_steps = pt.steps
    return old
