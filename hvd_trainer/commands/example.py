"""No subcommand: train the digits example (scikit-learn's bundled digits) into ./results, and
draw its learning curves. Nothing is downloaded; the CSV is cached under HVD_TRAINER_CACHE."""
from __future__ import annotations

import os

from hvd_trainer.commands.shared import start_strategy
from hvd_trainer.commands.train import new_run_layout, train_and_save
from hvd_trainer.examples import example_config_path, write_example_dataset
from hvd_trainer.job import JobConfig
from hvd_trainer.options import ExampleOptions, TrainOptions

EXAMPLE = "digits"
DEFAULT_CACHE = "~/.cache/hvd_trainer"


def run(options: ExampleOptions) -> int:
    cache = os.path.join(os.path.expanduser(os.environ.get("HVD_TRAINER_CACHE", DEFAULT_CACHE)), "examples")
    data_path = write_example_dataset(EXAMPLE, os.path.join(cache, f"{EXAMPLE}.csv"))
    train_options = TrainOptions(config=example_config_path(EXAMPLE), dataset=data_path,
                                 experiment_name=EXAMPLE, model_name="example")
    job = JobConfig.load(train_options.config)
    strategy = start_strategy(job.distributed)
    result = train_and_save(job, train_options, strategy, new_run_layout(train_options, strategy))
    if strategy.is_coordinator() and result.exit_code == 0:
        from hvd_trainer.visualize import learning_curves

        png = learning_curves(result.layout.training_statistics, result.layout.learning_curves)
        print(f"  Learning curves: {png}", flush=True)
    return result.exit_code
