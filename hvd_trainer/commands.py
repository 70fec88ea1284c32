"""The subcommands: train, evaluate, predict, tune-batch-size, visualize, and the built-in example.

Every subcommand works under horovodrun/mpirun/srun: all ranks run the same code, only rank 0
writes shared files and prints tables. Decisions that could differ between ranks (the run
directory's name, say) are made on rank 0 and broadcast.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from typing import Any, Dict, Optional

from hvd_trainer import run_dir as layout
from hvd_trainer.config import DistributedConfig, TrainerConfig, load_yaml
from hvd_trainer.config_schema import set_dotted
from hvd_trainer.errors import ConfigError
from hvd_trainer.signals import EXIT_REQUEUE, exit_code_for

logger = logging.getLogger(__name__)


def add_subcommands(sub) -> None:
    train = sub.add_parser("train", help="Train a model from a YAML config and a CSV/Parquet dataset.")
    train.add_argument("--config", "-c", required=False, help="YAML config (features, combiner, trainer, ...).")
    data = train.add_argument_group("data (one dataset split by the config, or separate files)")
    data.add_argument("--dataset", help="CSV or Parquet file, split per preprocessing.split.")
    data.add_argument("--training-set", help="CSV or Parquet training file.")
    data.add_argument("--validation-set", help="CSV or Parquet validation file.")
    data.add_argument("--test-set", help="CSV or Parquet test file.")
    train.add_argument("--output-directory", default="results", help="Where run directories go (default: results).")
    train.add_argument("--experiment-name", default="experiment")
    train.add_argument("--model-name", default="run")
    train.add_argument("--resume", metavar="EXPERIMENT_DIR",
                       help="Continue the run in EXPERIMENT_DIR, in place (its saved model config is used). With "
                            "--config, a directory that holds no run yet is where a new run starts (batch jobs).")
    train.add_argument("--skip-save-model", action="store_true")
    train.add_argument("--skip-save-progress", action="store_true")
    train.add_argument("--skip-save-log", action="store_true")
    train.add_argument("--random-seed", type=int, default=42)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a config value, e.g. --set trainer.epochs=3 (repeatable).")

    evaluate = sub.add_parser("evaluate", help="Metrics of a trained model on a dataset.")
    evaluate.add_argument("--model-path", required=True, help="A run directory or its model/ directory.")
    evaluate.add_argument("--dataset", required=True)
    evaluate.add_argument("--split", choices=("training", "validation", "test"),
                          help="Evaluate only the rows of this split (as the training run split the file).")
    evaluate.add_argument("--output-directory", help="Where evaluation_statistics.json goes (default: the run directory).")
    evaluate.add_argument("--batch-size", type=int, default=256)

    predict = sub.add_parser("predict", help="Predictions of a trained model, as predictions.csv.")
    predict.add_argument("--model-path", required=True)
    predict.add_argument("--dataset", required=True)
    predict.add_argument("--output-directory", required=True)
    predict.add_argument("--batch-size", type=int, default=256)

    tune = sub.add_parser("tune-batch-size", help="Find the batch size with the best throughput.")
    tune.add_argument("--config", "-c", required=True)
    tune.add_argument("--dataset", required=True)
    tune.add_argument("--random-seed", type=int, default=42)

    viz = sub.add_parser("visualize", help="Learning curves (PNG) from training_statistics.json.")
    viz.add_argument("--training-statistics", required=True)
    viz.add_argument("--output", default="learning_curves.png")


def run(args: argparse.Namespace) -> int:
    if args.command is None:
        return run_example(args)
    return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "tune-batch-size": cmd_tune_batch_size, "visualize": cmd_visualize}[args.command](args)


# ---- shared setup ---------------------------------------------------------------------------------
def _strategy(config: Dict[str, Any]):
    from hvd_trainer.distributed import init_dist_strategy

    dist = DistributedConfig.from_dict(config.get("distributed"))
    kwargs = {} if dist.strategy == "local" else {"compression": dist.compression, "op": dist.op}
    strategy = init_dist_strategy(dist.strategy, **kwargs)
    _quiet_other_ranks(strategy.rank())
    return strategy


def _quiet_other_ranks(rank: int) -> None:
    if rank != 0 and logging.getLogger().level > logging.DEBUG:
        logging.getLogger().setLevel(logging.WARNING)


def _read_config(path: Optional[str], overrides) -> Dict[str, Any]:
    config = load_yaml(path) if path else {}
    for assignment in overrides:
        set_dotted(config, assignment)
    return config


def _validated(config: Dict[str, Any]):
    """(model config, trainer config), validated before any work starts."""
    from hvd_trainer.models.config import ModelConfig

    return ModelConfig.from_dict(config), TrainerConfig.from_dict(config.get("trainer"))


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- train ----------------------------------------------------------------------------------------
def _resume_config(resume_dir: str, given: Dict[str, Any], overrides) -> Dict[str, Any]:
    """The saved model config, with trainer settings from the given config and --set applied."""
    from hvd_trainer.models.config import ModelConfig

    saved_path = layout.model_hyperparameters_path(resume_dir)
    if not os.path.exists(saved_path):
        raise ConfigError(
            f"--resume {resume_dir}: there is no {layout.MODEL_DIR}/{layout.MODEL_HYPERPARAMETERS} in it, so it is "
            "not an hvd_trainer run directory (results/<experiment>_<model>). Pass the directory that training created."
        )
    with open(saved_path) as fh:
        saved = json.load(fh)
    config = copy.deepcopy(saved)
    if given:
        if ModelConfig.from_dict(given).to_dict() != ModelConfig.from_dict(saved).to_dict():
            raise ConfigError(
                f"--resume {resume_dir}: the given config describes another model (features, combiner or "
                "preprocessing differ from the saved model_hyperparameters.json), and the checkpoint only fits the "
                "saved one. Resume without --config, or change only the trainer section (or use --set trainer.X=...)."
            )
        config["trainer"] = given.get("trainer", config.get("trainer", {}))
        if "distributed" in given:
            config["distributed"] = given["distributed"]
    for assignment in overrides:
        if not assignment.startswith(("trainer.", "distributed.")):
            raise ConfigError(
                f"--set {assignment}: only trainer.* and distributed.* may change when resuming; the model must "
                "stay the one the checkpoint was trained with."
            )
        set_dotted(config, assignment)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume and not os.path.exists(layout.model_hyperparameters_path(args.resume)) and args.config:
        # Nothing to resume yet (a batch job killed before it saved anything): start the run in
        # exactly this directory, so that the next --resume finds it.
        logger.info("Nothing to resume in %s yet; starting a new run there.", args.resume)
        args.fresh_run_directory, args.resume = args.resume, None
    if args.resume:
        config = _resume_config(args.resume, load_yaml(args.config) if args.config else {}, args.overrides)
    else:
        if not args.config:
            raise ConfigError("train needs --config (a YAML file with input_features and output_features), "
                              "or --resume EXPERIMENT_DIR to continue a run.")
        config = _read_config(args.config, args.overrides)
    model_config, trainer_config = _validated(config)
    strategy = _strategy(config)
    results = train_and_save(config, model_config, trainer_config, strategy, args)
    return results["exit_code"]


def train_and_save(config, model_config, trainer_config, strategy, args) -> Dict[str, Any]:
    from hvd_trainer.data.pipeline import check_enough_rows, load_training_data
    from hvd_trainer.data.preprocessing import load_metadata, save_metadata
    from hvd_trainer.models.feature_model import build_model
    from hvd_trainer.trainer import Trainer

    if args.resume:
        run_directory = args.resume
    elif getattr(args, "fresh_run_directory", None):
        run_directory = args.fresh_run_directory
    else:
        run_directory = strategy.broadcast_object(
            layout.new_run_directory(args.output_directory, args.experiment_name, args.model_name)
            if strategy.is_coordinator() else None, name="hvd_trainer.run_directory")
    model_dir = layout.model_dir(run_directory)
    saved_metadata = load_metadata(model_dir) if args.resume else None
    train, validation, test, metadata = load_training_data(
        model_config, strategy, dataset=args.dataset, training_set=args.training_set,
        validation_set=args.validation_set, test_set=args.test_set, random_seed=args.random_seed,
        metadata=saved_metadata)
    check_enough_rows(train.global_size(strategy), strategy.size(), trainer_config.batch_size)

    _seed(args.random_seed)
    model = build_model(model_config, metadata)
    if strategy.is_coordinator():
        os.makedirs(model_dir, exist_ok=True)
        layout.write_json(layout.model_hyperparameters_path(run_directory), config)
        layout.write_json(os.path.join(run_directory, layout.DESCRIPTION),
                          layout.description(config, args, strategy.size()))
        layout.clear_requeue_marker(run_directory)
    save_metadata(metadata, model_dir, strategy)

    trainer = Trainer(trainer_config, model, resume=bool(args.resume), skip_save_model=args.skip_save_model,
                      skip_save_progress=args.skip_save_progress, skip_save_log=args.skip_save_log,
                      random_seed=args.random_seed, distributed=strategy)
    _, train_stats, validation_stats, test_stats = trainer.train(train, validation, test, save_path=model_dir)
    code = exit_code_for(trainer.stop_reason)
    if strategy.is_coordinator():
        stats = {"training": train_stats, "validation": validation_stats, "test": test_stats}
        layout.write_json(os.path.join(run_directory, layout.TRAINING_STATISTICS), stats)
        if code == EXIT_REQUEUE:
            # horovodrun --gloo reports every rank failure as exit code 1, hiding 75: a batch
            # script can also look for this file to know the run wants to be requeued.
            layout.write_requeue_marker(run_directory, trainer.last_progress_tracker.steps)
        _print_summary(run_directory, trainer, test_stats, validation_stats)
    return {"exit_code": code, "run_directory": run_directory, "trainer": trainer}


def _print_summary(run_directory, trainer, test_stats, validation_stats) -> None:
    pt = trainer.last_progress_tracker
    if trainer.stop_reason:
        print(f"Training stopped at step {pt.steps} ({trainer.stop_reason}); resume with: "
              f"python -m hvd_trainer train --resume {run_directory}", flush=True)
        return
    lines = [f"Finished: {pt.steps} steps, {pt.epoch} epoch(s). Results in {run_directory}"]
    field = trainer.validation_field
    for name, stats in (("validation", validation_stats), ("test", test_stats)):
        if stats and field in stats:
            best = pt.best_eval_validation_metrics if name == "validation" else pt.best_eval_test_metrics
            values = best.get(field) or {m: s[-1][2] for m, s in stats[field].items()}
            lines.append(f"  {name} ({field}, best checkpoint): " +
                         ", ".join(f"{m} {v:.4f}" for m, v in values.items()))
    lines.append(f"  TensorBoard: tensorboard --logdir {os.path.join(layout.model_dir(run_directory), 'logs')}")
    print("\n".join(lines), flush=True)


# ---- evaluate / predict -----------------------------------------------------------------------------
def _load_trained(model_path: str, strategy_config: Optional[Dict[str, Any]] = None):
    """(config, model_config, metadata, model with the trained weights, strategy)."""
    import torch

    from hvd_trainer.data.preprocessing import load_metadata
    from hvd_trainer.errors import CheckpointError
    from hvd_trainer.models.config import ModelConfig
    from hvd_trainer.models.feature_model import build_model

    run_directory = layout.run_directory_of(model_path)
    params = layout.model_hyperparameters_path(run_directory)
    if not os.path.exists(params):
        raise ConfigError(f"{model_path} is not a trained model: {params} is missing. Pass the run directory that "
                          "'train' created (results/<experiment>_<model>) or its model/ directory.")
    with open(params) as fh:
        config = json.load(fh)
    model_config = ModelConfig.from_dict(config)
    strategy = _strategy(config)
    metadata = load_metadata(layout.model_dir(run_directory))
    model = build_model(model_config, metadata)
    weights = os.path.join(layout.model_dir(run_directory), layout.MODEL_WEIGHTS)
    if not os.path.exists(weights):
        raise CheckpointError(f"{weights} is missing: the run saved no model (was it trained with --skip-save-model, "
                              "or did it stop before its first evaluation?).")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise CheckpointError(f"The model weights {weights} cannot be read ({type(e).__name__}: {e}).") from e
    model.load_state_dict(state)
    return config, model_config, metadata, model, strategy, run_directory


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hvd_trainer.data.pipeline import load_inference_data
    from hvd_trainer.predictor import Predictor
    from hvd_trainer.summary import format_metrics_table

    config, model_config, metadata, model, strategy, run_directory = _load_trained(args.model_path)
    dataset = load_inference_data(model_config, metadata, args.dataset, strategy, shard=True, split=args.split)
    metrics = Predictor(model, model, args.batch_size, strategy, "cpu").batch_evaluation(dataset)
    if strategy.is_coordinator():
        out_dir = args.output_directory or run_directory
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "evaluation_statistics.json")
        layout.write_json(path, metrics)
        print(format_metrics_table({"test": metrics}), flush=True)
        print(f"Metrics written to {path}", flush=True)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hvd_trainer.data.pipeline import ROW_ID, load_inference_data
    from hvd_trainer.predictor import Predictor
    from hvd_trainer.predictions import write_predictions_csv

    config, model_config, metadata, model, strategy, _ = _load_trained(args.model_path)
    dataset = load_inference_data(model_config, metadata, args.dataset, strategy, shard=True, include_targets=False)
    columns = Predictor(model, model, args.batch_size, strategy, "cpu").batch_predict(dataset, row_id_column=ROW_ID)
    if strategy.is_coordinator():
        path = write_predictions_csv(columns, model.output_features, metadata, args.output_directory)
        print(f"Predictions for {len(columns[ROW_ID]) if columns else 0} rows written to {path}", flush=True)
    return 0


# ---- tune-batch-size ----------------------------------------------------------------------------------
def cmd_tune_batch_size(args: argparse.Namespace) -> int:
    from hvd_trainer.data.pipeline import load_training_data
    from hvd_trainer.models.feature_model import build_model
    from hvd_trainer.trainer import Trainer

    config = _read_config(args.config, [])
    model_config, trainer_config = _validated(config)
    strategy = _strategy(config)
    train, _, _, metadata = load_training_data(model_config, strategy, dataset=args.dataset, random_seed=args.random_seed)
    _seed(args.random_seed)
    trainer = Trainer(trainer_config, build_model(model_config, metadata), distributed=strategy,
                      random_seed=args.random_seed, skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    best = trainer.tune_batch_size(train)
    if strategy.is_coordinator():
        print(f"Best batch size per rank: {best} ({best * strategy.size()} per step over {strategy.size()} rank(s)). "
              f"Set trainer.batch_size: {best} to skip tuning next time.", flush=True)
    return 0


# ---- visualize ------------------------------------------------------------------------------------------
def cmd_visualize(args: argparse.Namespace) -> int:
    from hvd_trainer.visualize import learning_curves

    if not os.path.exists(args.training_statistics):
        raise ConfigError(f"{args.training_statistics} does not exist; pass the training_statistics.json of a run "
                          "(results/<experiment>_<model>/training_statistics.json).")
    path = learning_curves(args.training_statistics, args.output)
    print(f"Learning curves written to {path}", flush=True)
    return 0


# ---- the built-in example ---------------------------------------------------------------------------------
def run_example(args: argparse.Namespace) -> int:
    """No subcommand: train the digits example (scikit-learn's bundled digits) into ./results."""
    from hvd_trainer.examples import example_config_path, write_example_dataset

    cache = os.path.join(os.path.expanduser(os.environ.get("HVD_TRAINER_CACHE", "~/.cache/hvd_trainer")), "examples")
    data_path = write_example_dataset("digits", os.path.join(cache, "digits.csv"))
    ns = argparse.Namespace(config=example_config_path("digits"), dataset=data_path, training_set=None,
                            validation_set=None, test_set=None, output_directory="results", experiment_name="digits",
                            model_name="example", resume=None, skip_save_model=False, skip_save_progress=False,
                            skip_save_log=False, random_seed=42, overrides=[])
    config = _read_config(ns.config, [])
    model_config, trainer_config = _validated(config)
    strategy = _strategy(config)
    results = train_and_save(config, model_config, trainer_config, strategy, ns)
    if strategy.is_coordinator() and results["exit_code"] == 0:
        from hvd_trainer.visualize import learning_curves

        stats = os.path.join(results["run_directory"], layout.TRAINING_STATISTICS)
        png = learning_curves(stats, os.path.join(results["run_directory"], "learning_curves.png"))
        print(f"  Learning curves: {png}", flush=True)
    return results["exit_code"]
