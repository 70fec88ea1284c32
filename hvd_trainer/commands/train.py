"""`train`: a model from a config and a dataset, into a new run directory or resumed in place.

    python -m hvd_trainer train --config c.yaml --dataset d.csv [--set trainer.epochs=3]
    python -m hvd_trainer train --resume results/experiment_run [--set trainer.epochs=5]
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from hvd_trainer.checkpoint import atomic_write_text
from hvd_trainer.commands.run_description import describe_run
from hvd_trainer.commands.shared import seed_everything, start_strategy, write_json
from hvd_trainer.distributed import DistributedStrategy
from hvd_trainer.errors import ConfigError
from hvd_trainer.job import JobConfig
from hvd_trainer.options import TrainOptions
from hvd_trainer.run_layout import RunLayout
from hvd_trainer.signals import EXIT_REQUEUE, exit_code_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDirectoryChoice:
    """Where a training run goes, decided from the options before anything is loaded."""

    directory: Optional[str]
    """An existing directory to use as it is; None: a new <experiment>_<model>[_N] directory."""
    resuming: bool
    """True when `directory` holds a run to continue."""


@dataclass(frozen=True)
class TrainResult:
    exit_code: int
    layout: RunLayout
    trainer: Any


def run(options: TrainOptions) -> int:
    choice = choose_run_directory(options)
    job = load_job(options, choice)
    strategy = start_strategy(job.distributed)
    if choice.directory is not None:
        layout = RunLayout(choice.directory)
    else:
        layout = new_run_layout(options, strategy)
    return train_and_save(job, options, strategy, layout, resuming=choice.resuming).exit_code


def choose_run_directory(options: TrainOptions) -> RunDirectoryChoice:
    if options.resume and options.config and not os.path.exists(RunLayout(options.resume).hyperparameters):
        # Nothing to resume yet (a batch job killed before it saved anything): start the run in
        # exactly this directory, so that the next --resume finds it.
        logger.info("Nothing to resume in %s yet; starting a new run there.", options.resume)
        return RunDirectoryChoice(directory=options.resume, resuming=False)
    return RunDirectoryChoice(directory=options.resume, resuming=bool(options.resume))


def load_job(options: TrainOptions, choice: RunDirectoryChoice) -> JobConfig:
    if choice.resuming:
        return JobConfig.for_resume(RunLayout(choice.directory), options.config, options.overrides)
    if not options.config:
        raise ConfigError("train needs --config (a YAML file with input_features and output_features), "
                          "or --resume EXPERIMENT_DIR to continue a run.")
    return JobConfig.load(options.config, options.overrides)


def new_run_layout(options: TrainOptions, strategy: DistributedStrategy) -> RunLayout:
    """A fresh run directory, named and created on rank 0 and broadcast, so all ranks share it."""
    root = strategy.broadcast_object(
        RunLayout.new(options.output_directory, options.experiment_name, options.model_name).root
        if strategy.is_coordinator() else None, name="hvd_trainer.run_directory")
    return RunLayout(root)


def train_and_save(job: JobConfig, options: TrainOptions, strategy: DistributedStrategy, layout: RunLayout,
                   resuming: bool = False) -> TrainResult:
    """Load the data, build the model, record the run's start, train, and record its end."""
    from hvd_trainer.data.preprocessing import save_metadata
    from hvd_trainer.trainer import Trainer

    datasets, metadata, model = _data_and_model(job, options, strategy, layout, resuming)
    if strategy.is_coordinator():
        _record_start(job, options, layout, strategy.size())
    save_metadata(metadata, layout.model_dir, strategy)

    trainer = Trainer(job.trainer, model, resume=resuming, skip_save_model=options.skip_save_model,
                      skip_save_progress=options.skip_save_progress, skip_save_log=options.skip_save_log,
                      random_seed=options.random_seed, distributed=strategy)
    _, train_stats, validation_stats, test_stats = trainer.train(*datasets, save_path=layout.model_dir)
    code = exit_code_for(trainer.stop_reason)
    if strategy.is_coordinator():
        stats = {"training": train_stats, "validation": validation_stats, "test": test_stats}
        _record_end(layout, stats, code, trainer.last_progress_tracker.steps)
        _print_summary(layout, trainer, test_stats, validation_stats)
    return TrainResult(exit_code=code, layout=layout, trainer=trainer)


def _data_and_model(job: JobConfig, options: TrainOptions, strategy: DistributedStrategy, layout: RunLayout,
                    resuming: bool):
    """((train, validation, test), metadata, model); a resumed run reuses its saved metadata."""
    from hvd_trainer.data.pipeline import check_enough_rows, load_training_data
    from hvd_trainer.data.preprocessing import load_metadata
    from hvd_trainer.models.feature_model import build_model

    saved_metadata = load_metadata(layout.model_dir) if resuming else None
    train, validation, test, metadata = load_training_data(
        job.model, strategy, dataset=options.dataset, training_set=options.training_set,
        validation_set=options.validation_set, test_set=options.test_set, random_seed=options.random_seed,
        metadata=saved_metadata)
    check_enough_rows(train.global_size(strategy), strategy.size(), job.trainer.batch_size)
    seed_everything(options.random_seed)
    return (train, validation, test), metadata, build_model(job.model, metadata)


def _record_start(job: JobConfig, options: TrainOptions, layout: RunLayout, world_size: int) -> None:
    """Rank 0: the config and the run's description, and no stale requeue request."""
    os.makedirs(layout.model_dir, exist_ok=True)
    write_json(layout.hyperparameters, job.as_given)
    write_json(layout.description, describe_run(job.as_given, options, world_size))
    try:
        os.unlink(layout.requeue_marker)
    except FileNotFoundError:
        pass


def _record_end(layout: RunLayout, stats: Dict[str, Any], exit_code: int, steps: int) -> None:
    write_json(layout.training_statistics, stats)
    if exit_code == EXIT_REQUEUE:
        # horovodrun --gloo reports every rank failure as exit code 1, hiding 75: a batch
        # script can also look for this file to know the run wants to be requeued.
        atomic_write_text(layout.requeue_marker, f"checkpoint saved at step {steps}\n")


def _print_summary(layout: RunLayout, trainer, test_stats, validation_stats) -> None:
    pt = trainer.last_progress_tracker
    if trainer.stop_reason:
        print(f"Training stopped at step {pt.steps} ({trainer.stop_reason}); resume with: "
              f"python -m hvd_trainer train --resume {layout.root}", flush=True)
        return
    lines = [f"Finished: {pt.steps} steps, {pt.epoch} epoch(s). Results in {layout.root}"]
    field = trainer.validation_field
    for name, stats in (("validation", validation_stats), ("test", test_stats)):
        if stats and field in stats:
            best = pt.best_eval_validation_metrics if name == "validation" else pt.best_eval_test_metrics
            values = best.get(field) or {m: s[-1][2] for m, s in stats[field].items()}
            lines.append(f"  {name} ({field}, best checkpoint): " +
                         ", ".join(f"{m} {v:.4f}" for m, v in values.items()))
    lines.append(f"  TensorBoard: tensorboard --logdir {layout.logs_dir}")
    print("\n".join(lines), flush=True)
