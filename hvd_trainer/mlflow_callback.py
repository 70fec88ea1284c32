"""MLflowCallback: the run's config, its metrics at every evaluation and its model, in MLflow.

Switched on by `trainer.mlflow.tracking_uri` (or `train --mlflow-tracking-uri URI`). Like every
hook under Ludwig's contract it acts on the coordinator only: rank 0 creates (or, on resume,
reopens) one MLflow run, logs the flattened config as params at setup, each evaluation's
metrics with the optimizer step, and at the end the model directory as the artifact `model`
(training_checkpoints/ left out: it is for resuming, and can be large). The run's id is kept in
the model directory, so `train --resume` continues the same MLflow run.

MLflow 3 refuses file: stores unless MLFLOW_ALLOW_FILE_STORE is set; a file: URI given here is
an explicit choice, so it is set (unless the environment says otherwise) on rank 0.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from hvd_trainer.callbacks import Callback
from hvd_trainer.config import MLflowConfig, TrainerConfig
from hvd_trainer.errors import ConfigError
from hvd_trainer.run_layout import TRAINING_CHECKPOINTS_DIR, RunLayout

logger = logging.getLogger(__name__)

#: The file in the model directory that holds the MLflow run's id.
RUN_ID_FILE = "mlflow_run_id"
#: MLflow takes at most this many params per log_batch call.
PARAM_BATCH = 100
#: Longer param values are cut (MLflow refuses values over 6000 characters).
MAX_PARAM_LENGTH = 6000


def require_mlflow() -> None:
    """A ConfigError naming the fix when the mlflow client is not installed (checked before any work)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("trainer.mlflow.tracking_uri is set, but the Python package mlflow is not installed. "
                          "Install it with `pip install 'hvd_trainer[mlflow]'` (or `pip install mlflow-skinny`), or "
                          "remove trainer.mlflow.tracking_uri / --mlflow-tracking-uri to train without MLflow.")


def flatten(config: Any, prefix: str = "") -> Dict[str, str]:
    """{"trainer.optimizer.type": "adam", "input_features.0.name": "x", ...}: MLflow params are flat strings."""
    if isinstance(config, dict):
        items: Iterator[Tuple[Any, Any]] = iter(config.items())
    elif isinstance(config, (list, tuple)):
        items = iter(enumerate(config))
    else:
        return {prefix: str(config)[:MAX_PARAM_LENGTH]}
    out: Dict[str, str] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def metric_key(split: str, feature: str, metric: str) -> str:
    """validation.label.accuracy; characters MLflow refuses in a key become '_'."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", f"{split}.{feature}.{metric}")


class MLflowCallback(Callback):
    """Logs one training run to MLflow from the coordinator (see the module's docstring)."""

    def __init__(self, config: MLflowConfig):
        self.config = config
        self.client = None
        self.run_id: Optional[str] = None

    # ---- setup -----------------------------------------------------------------------------
    def on_trainer_train_setup(self, trainer, save_path: str, is_coordinator: bool) -> None:
        if not is_coordinator:
            return
        require_mlflow()
        if self.config.tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.config.tracking_uri)
        layout = RunLayout.of_model_dir(save_path)
        self.run_id = self._reopened_run(save_path) or self._new_run(layout)
        self._write_run_id(save_path)
        self._log_params(self._config_of(trainer, layout))
        logger.info("MLflow: run %s in experiment %r at %s", self.run_id, self.config.experiment_name,
                    self.config.tracking_uri)

    def _reopened_run(self, save_path: str) -> Optional[str]:
        """The MLflow run this run directory logged to before (resume), marked running again."""
        from mlflow.exceptions import MlflowException

        try:
            with open(os.path.join(save_path, RUN_ID_FILE)) as fh:
                run_id = fh.read().strip()
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        except (OSError, MlflowException):
            return None  # no earlier run, or one this tracking URI does not know: start a new one

    def _new_run(self, layout: RunLayout) -> str:
        experiment = self.client.get_experiment_by_name(self.config.experiment_name)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(self.config.experiment_name))
        name = self.config.run_name or os.path.basename(os.path.normpath(layout.root)) or "hvd_trainer"
        run = self.client.create_run(experiment_id, run_name=name, tags={"hvd_trainer.run_directory": layout.root})
        return run.info.run_id

    def _write_run_id(self, save_path: str) -> None:
        from hvd_trainer.checkpoint import atomic_write_text

        os.makedirs(save_path, exist_ok=True)
        atomic_write_text(os.path.join(save_path, RUN_ID_FILE), self.run_id + "\n")

    @staticmethod
    def _config_of(trainer, layout: RunLayout) -> Dict[str, Any]:
        """The whole job's config where the run directory has it (the CLI's runs), else the trainer section."""
        import json

        try:
            with open(layout.hyperparameters) as fh:
                config = json.load(fh)
        except (OSError, ValueError):
            config = {}
        return {**config, "trainer": trainer.config.to_dict()}

    def _log_params(self, config: Dict[str, Any]) -> None:
        """Params not logged yet (MLflow refuses to change one: a resumed run keeps its first values)."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flatten(config).items() if k in logged and logged[k] != v)
        if changed:
            logger.info("MLflow: params %s changed on resume; the run keeps their first values.", ", ".join(changed))
        params = [Param(k, v) for k, v in flatten(config).items() if k not in logged]
        for i in range(0, len(params), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + PARAM_BATCH])

    # ---- every evaluation ------------------------------------------------------------------
    def on_eval_end(self, trainer, progress_tracker, save_path: str) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            return
        step, now = int(progress_tracker.steps), int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in self._latest(progress_tracker, step)]
        metrics.append(Metric("learning_rate", float(progress_tracker.learning_rate), now, step))
        self.client.log_batch(self.run_id, metrics=metrics)

    @staticmethod
    def _latest(progress_tracker, step: int) -> List[Tuple[str, float]]:
        """(key, value) of each metric that this evaluation (at `step`) appended."""
        out = []
        for split in ("training", "validation", "test"):
            for feature, metrics in progress_tracker.metrics_of(split).items():
                for metric, history in metrics.items():
                    if history and int(history[-1][1]) == step:
                        out.append((metric_key(split, feature, metric), float(history[-1][2])))
        return out

    # ---- the end ---------------------------------------------------------------------------
    def on_trainer_train_teardown(self, trainer, progress_tracker, save_path: str, is_coordinator: bool) -> None:
        if self.client is None:
            return
        if self.config.log_model and os.path.isdir(save_path):
            for entry in sorted(os.listdir(save_path)):
                path = os.path.join(save_path, entry)
                if entry == TRAINING_CHECKPOINTS_DIR:
                    continue
                if os.path.isdir(path):
                    self.client.log_artifacts(self.run_id, path, artifact_path=f"model/{entry}")
                else:
                    self.client.log_artifact(self.run_id, path, artifact_path="model")
        # A run stopped by a signal (to be requeued) is not finished; resume reopens it.
        self.client.set_terminated(self.run_id, status="KILLED" if trainer.stop_reason else "FINISHED")
        self.client = None


def configured_callbacks(config: TrainerConfig) -> List[Callback]:
    """The callbacks the trainer config itself asks for (MLflow when trainer.mlflow.tracking_uri is set)."""
    return [MLflowCallback(config.mlflow)] if config.mlflow.tracking_uri else []
