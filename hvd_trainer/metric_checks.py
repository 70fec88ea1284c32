"""The trainer config's metric names checked against the model before any work starts.

validation_field / validation_metric, the LR scheduler's reduce_eval_metric and
increase_batch_size_eval_metric name an output and its metrics (their splits are checked with
the config's other values); a typo would otherwise surface
only at the first evaluation, after an epoch of training, as a lookup that fails.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

from hvd_trainer.config import TrainerConfig
from hvd_trainer.config_schema import did_you_mean
from hvd_trainer.errors import ConfigError
from hvd_trainer.metrics import LOSS
from hvd_trainer.models.batch_metrics import COMBINED


def reported_metrics(output_features: Mapping[str, object]) -> Dict[str, List[str]]:
    """Each output's metric names, and the combined loss of all outputs."""
    reported = {name: [m.name for m in feature.metric_types] for name, feature in output_features.items()}
    reported[COMBINED] = [LOSS]
    return reported


def check_metric_references(config: TrainerConfig, output_features: Mapping[str, object], validation_field: str) -> None:
    """A ConfigError naming the key, the value and the choices, for every metric or split the config names wrongly."""
    reported = reported_metrics(output_features)
    if validation_field not in reported:
        raise ConfigError(f"trainer.validation_field is {validation_field!r}, which is not an output of this model; "
                          f"use one of: {', '.join(reported)}.{did_you_mean(validation_field, reported)}")
    named = [("trainer.validation_metric", config.validation_metric or LOSS)]
    scheduler = config.learning_rate_scheduler
    if scheduler.reduce_on_plateau > 0:
        named.append(("trainer.learning_rate_scheduler.reduce_eval_metric", scheduler.reduce_eval_metric))
    if config.increase_batch_size_on_plateau > 0:
        named.append(("trainer.increase_batch_size_eval_metric", config.increase_batch_size_eval_metric))
    choices = reported[validation_field]
    for key, metric in named:
        if metric not in choices:
            raise ConfigError(f"{key} is {metric!r}, but {validation_field} (trainer.validation_field) reports "
                              f"{', '.join(choices)}; choose one of these.{did_you_mean(metric, choices)}")
