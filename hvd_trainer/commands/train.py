"""`train`: a model from a config and a dataset, into a new run directory or resumed in place.

    python -m hvd_trainer train --config c.yaml --dataset d.csv [--set trainer.epochs=3]
    python -m hvd_trainer train --resume results/experiment_run [--set trainer.epochs=5]

Only rank 0 reads the config and the run directory (resume or start fresh, the saved config and
metadata) and writes the run's files; the other ranks get what it found by broadcast, so the
output directory only needs to exist on rank 0's host (see coordinator.py).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from hvd_trainer.checkpoint import atomic_write_text
from hvd_trainer.commands.run_description import describe_run
from hvd_trainer.commands.shared import seed_everything, start_and_agree, write_json, writing_into
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.distributed import DistributedStrategy
from hvd_trainer.errors import ConfigError
from hvd_trainer.job import JobConfig
from hvd_trainer.options import TrainOptions
from hvd_trainer.run_layout import RunLayout
from hvd_trainer.signals import EXIT_REQUEUE, exit_code_for
from hvd_trainer.summary import format_metrics_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDirectoryChoice:
    """Where a training run goes, decided from the options before anything is loaded."""

    directory: Optional[str]
    """An existing directory to use as it is; None: a new <experiment>_<model>[_N] directory."""
    resuming: bool
    """True when `directory` holds a run to continue."""


@dataclass(frozen=True)
class RunPlan:
    """What rank 0 found in the files and decided before any rank acts; the same on every rank."""

    job: JobConfig
    choice: RunDirectoryChoice
    saved_metadata: Optional[Dict[str, Any]]
    """The resumed run's training_set_metadata; None for a new run (computed from the data)."""


@dataclass(frozen=True)
class TrainResult:
    exit_code: int
    layout: RunLayout
    trainer: Any


def run(options: TrainOptions) -> int:
    strategy, plan = start_and_agree(options.all_overrides(), "hvd_trainer.train_plan", lambda: plan_run(options),
                                     lambda found: found.job.distributed)
    if plan.choice.directory is not None:
        layout = RunLayout(plan.choice.directory)
    else:
        layout = new_run_layout(options, strategy)
    return train_and_save(plan.job, options, strategy, layout, saved_metadata=plan.saved_metadata).exit_code


def plan_run(options: TrainOptions) -> RunPlan:
    """Rank 0: resume or start fresh, the job's config, and a resumed run's metadata, from its own files."""
    from hvd_trainer.data.preprocessing import load_metadata

    choice = choose_run_directory(options)
    job = load_job(options, choice)
    saved_metadata = load_metadata(RunLayout(choice.directory).model_dir) if choice.resuming else None
    return RunPlan(job=job, choice=choice, saved_metadata=saved_metadata)


def choose_run_directory(options: TrainOptions) -> RunDirectoryChoice:
    if options.resume and options.config and not os.path.exists(RunLayout(options.resume).hyperparameters):
        # Nothing to resume yet (a batch job killed before it saved anything): start the run in
        # exactly this directory, so that the next --resume finds it.
        logger.info("Nothing to resume in %s yet; starting a new run there.", options.resume)
        return RunDirectoryChoice(directory=options.resume, resuming=False)
    return RunDirectoryChoice(directory=options.resume, resuming=bool(options.resume))


def load_job(options: TrainOptions, choice: RunDirectoryChoice) -> JobConfig:
    if choice.resuming:
        return JobConfig.for_resume(RunLayout(choice.directory), options.config, options.all_overrides())
    if not options.config:
        raise ConfigError("train needs --config (a YAML file with input_features and output_features), "
                          "or --resume EXPERIMENT_DIR to continue a run.")
    return JobConfig.load(options.config, options.all_overrides())


def new_run_layout(options: TrainOptions, strategy: DistributedStrategy) -> RunLayout:
    """A fresh run directory, named and created on rank 0 and broadcast (the others never touch it)."""
    return run_on_coordinator(strategy, "hvd_trainer.run_directory", lambda: _create_run_directory(options))


def _create_run_directory(options: TrainOptions) -> RunLayout:
    with writing_into(options.output_directory):
        return RunLayout.new(options.output_directory, options.experiment_name, options.model_name)


def train_and_save(job: JobConfig, options: TrainOptions, strategy: DistributedStrategy, layout: RunLayout,
                   saved_metadata: Optional[Dict[str, Any]] = None) -> TrainResult:
    """Load the data, build the model, record the run's start, train, and record its end.

    saved_metadata: the metadata of the run in `layout` to resume (rank 0's, broadcast); None
    starts a new run.
    """
    from hvd_trainer.mlflow_callback import require_mlflow
    from hvd_trainer.trainer import Trainer

    if job.trainer.mlflow.tracking_uri:  # only rank 0 logs, so only its installed packages matter
        run_on_coordinator(strategy, "hvd_trainer.mlflow_installed", require_mlflow)
    datasets, metadata, model = _data_and_model(job, options, strategy, saved_metadata)
    run_on_coordinator(strategy, "hvd_trainer.run_start",
                       lambda: _record_start(job, options, layout, strategy.size(), metadata))

    trainer = Trainer(job.trainer, model, resume=saved_metadata is not None, skip_save_model=options.skip_save_model,
                      skip_save_progress=options.skip_save_progress, skip_save_log=options.skip_save_log,
                      random_seed=options.random_seed, distributed=strategy)
    _, train_stats, validation_stats, test_stats = trainer.train(*datasets, save_path=layout.model_dir)
    code = exit_code_for(trainer.stop_reason)
    stats = {"training": train_stats, "validation": validation_stats, "test": test_stats}
    run_on_coordinator(strategy, "hvd_trainer.run_end",
                       lambda: _record_end(layout, stats, code, trainer.last_progress_tracker.steps))
    if strategy.is_coordinator():
        _print_summary(layout, trainer, stats)
    return TrainResult(exit_code=code, layout=layout, trainer=trainer)


def _data_and_model(job: JobConfig, options: TrainOptions, strategy: DistributedStrategy,
                    saved_metadata: Optional[Dict[str, Any]]):
    """((train, validation, test), metadata, model); a resumed run reuses its saved metadata."""
    from hvd_trainer.data.pipeline import check_enough_rows, load_training_data
    from hvd_trainer.models.feature_model import build_model

    train, validation, test, metadata = load_training_data(
        job.model, strategy, dataset=options.dataset, training_set=options.training_set,
        validation_set=options.validation_set, test_set=options.test_set, random_seed=options.random_seed,
        metadata=saved_metadata)
    check_enough_rows(train.global_size(strategy), strategy.size(), job.trainer.batch_size)
    seed_everything(options.random_seed)
    return (train, validation, test), metadata, build_model(job.model, metadata)


def _record_start(job: JobConfig, options: TrainOptions, layout: RunLayout, world_size: int,
                  metadata: Dict[str, Any]) -> None:
    """Rank 0: the config, the metadata and the run's description, and no stale requeue request."""
    from hvd_trainer.data.preprocessing import save_metadata

    with writing_into(layout.root):
        os.makedirs(layout.model_dir, exist_ok=True)
        write_json(layout.hyperparameters, job.as_given)
        save_metadata(metadata, layout.model_dir)
        write_json(layout.description, describe_run(job.as_given, options, world_size))
        try:
            os.unlink(layout.requeue_marker)
        except FileNotFoundError:
            pass


def _record_end(layout: RunLayout, stats: Dict[str, Any], exit_code: int, steps: int) -> None:
    with writing_into(layout.root):
        write_json(layout.training_statistics, stats)
        if exit_code == EXIT_REQUEUE:
            # horovodrun --gloo reports every rank failure as exit code 1, hiding 75: a batch
            # script can also look for this file to know the run wants to be requeued.
            atomic_write_text(layout.requeue_marker, f"checkpoint saved at step {steps}\n")


def _print_summary(layout: RunLayout, trainer, stats: Dict[str, Any]) -> None:
    pt = trainer.last_progress_tracker
    if trainer.stop_reason:
        print(f"Training stopped at step {pt.steps} ({trainer.stop_reason}); resume with: "
              f"python -m hvd_trainer train --resume {layout.root}", flush=True)
        return
    lines = [f"Finished: {pt.steps} steps, {pt.epoch} epoch(s). Results in {layout.root}"]
    title, table = _kept_model_table(pt, stats)
    if table:
        lines += [title, table]
    lines.append(f"  TensorBoard: tensorboard --logdir {layout.logs_dir}")
    print("\n".join(lines), flush=True)


def _kept_model_table(pt, stats: Dict[str, Any]):
    """(title, table) of the model train() returned: the best checkpoint's metrics, or with no validation
    set (every evaluation is the best) the last evaluation's."""
    best = {"training": pt.best_eval_train_metrics, "validation": pt.best_eval_validation_metrics,
            "test": pt.best_eval_test_metrics}
    if any(best.values()):
        return f"Best checkpoint (step {pt.best_eval_metric_steps}):", format_metrics_table(best)
    last = {split: {f: {m: series[-1][2] for m, series in ms.items() if series} for f, ms in history.items()}
            for split, history in stats.items() if history}
    return "Last evaluation:", format_metrics_table(last)
