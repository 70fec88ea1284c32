"""The command line's flags, and the typed options each subcommand receives.

    python -m hvd_trainer [--log-level L] [train|evaluate|predict|export|tune-batch-size|visualize|doctor] ...

`parse_run_options(argv)` returns a RunOptions whose `command` is one frozen dataclass per
subcommand (ExampleOptions when none is given). The commands read these fields and never see
an argparse Namespace. Each dataclass field is named like the argparse `dest` of its flag, and
the defaults of the flags are taken from the dataclasses, so each default is written once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import List, Optional, Tuple, Type, TypeVar, Union

SPLITS = ("training", "validation", "test")
LOG_LEVELS = ("debug", "info", "warning", "error")
STRATEGIES = ("auto", "horovod", "local")
EXPORT_FORMATS = ("torchscript", "onnx")


@dataclass(frozen=True)
class TrainOptions:
    """`train`: a model from a YAML config and a dataset, into a new or resumed run directory."""

    config: Optional[str] = None
    dataset: Optional[str] = None
    training_set: Optional[str] = None
    validation_set: Optional[str] = None
    test_set: Optional[str] = None
    output_directory: str = "results"
    experiment_name: str = "experiment"
    model_name: str = "run"
    resume: Optional[str] = None
    """A run directory to continue in place (with --config: where a new run starts if it holds none)."""
    skip_save_model: bool = False
    skip_save_progress: bool = False
    skip_save_log: bool = False
    random_seed: int = 42
    overrides: Tuple[str, ...] = ()
    """`--set a.b=c` assignments, applied in order over the config file."""
    mlflow_tracking_uri: Optional[str] = None
    """Log the run to MLflow there (the same as --set trainer.mlflow.tracking_uri=URI)."""

    def all_overrides(self) -> Tuple[str, ...]:
        """--set assignments, then what other flags set in the config (as if given with --set after them)."""
        if self.mlflow_tracking_uri is None:
            return self.overrides
        # JSON is YAML: the URI stays one string whatever it holds (':', '#', spaces).
        return self.overrides + (f"trainer.mlflow.tracking_uri={json.dumps(self.mlflow_tracking_uri)}",)


@dataclass(frozen=True)
class EvaluateOptions:
    """`evaluate`: metrics of a trained model on a dataset."""

    model_path: str
    dataset: str
    split: Optional[str] = None
    output_directory: Optional[str] = None
    """Where evaluation_statistics.json goes (None: the run directory)."""
    batch_size: int = 256


@dataclass(frozen=True)
class PredictOptions:
    """`predict`: predictions.csv of a trained model."""

    model_path: str
    dataset: str
    output_directory: str
    batch_size: int = 256


@dataclass(frozen=True)
class ExportOptions:
    """`export`: a trained model as a TorchScript or ONNX file (with its signature beside it)."""

    model_path: str
    format: str
    output: Optional[str] = None
    """The model file (None: <run>/exported/model.pt or model.onnx)."""


@dataclass(frozen=True)
class TuneBatchSizeOptions:
    """`tune-batch-size`: the per-rank batch size with the best throughput."""

    config: str
    dataset: str
    random_seed: int = 42


@dataclass(frozen=True)
class VisualizeOptions:
    """`visualize`: learning curves (PNG) from a run's training_statistics.json."""

    training_statistics: str
    output: str = "learning_curves.png"


@dataclass(frozen=True)
class DoctorOptions:
    """`doctor`: the rank report, or with `hosts` the pre-flight check of a multi-host launch."""

    strategy: str = "auto"
    hosts: Optional[str] = None
    network_interface: Optional[str] = None
    ssh_port: Optional[int] = None
    ssh_identity_file: Optional[str] = None


@dataclass(frozen=True)
class ExampleOptions:
    """No subcommand: train the built-in digits example into ./results."""


CommandOptions = Union[TrainOptions, EvaluateOptions, PredictOptions, ExportOptions, TuneBatchSizeOptions,
                       VisualizeOptions, DoctorOptions, ExampleOptions]


@dataclass(frozen=True)
class RunOptions:
    """Everything the command line said: the logging level and one subcommand's options."""

    log_level: str
    command: CommandOptions


# Subcommand name -> its options class (the name is also argparse's `dest="command"` value).
COMMANDS = {"train": TrainOptions, "evaluate": EvaluateOptions, "predict": PredictOptions, "export": ExportOptions,
            "tune-batch-size": TuneBatchSizeOptions, "visualize": VisualizeOptions, "doctor": DoctorOptions}


def parse_run_options(argv: Optional[List[str]] = None) -> RunOptions:
    """argv (default: sys.argv[1:]) -> RunOptions; argparse exits with status 2 on bad flags."""
    namespace = build_parser().parse_args(argv)
    options_class = COMMANDS.get(namespace.command, ExampleOptions)
    return RunOptions(log_level=namespace.log_level, command=_from_namespace(options_class, namespace))


T = TypeVar("T")


def _from_namespace(cls: Type[T], namespace: argparse.Namespace) -> T:
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}
    if "overrides" in values:
        values["overrides"] = tuple(values["overrides"])
    return cls(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvd_trainer",
        description="Data-parallel PyTorch training on Horovod. Run under horovodrun, mpirun or srun "
        "for several ranks; with no subcommand, trains the built-in example.",
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="Logging level (ranks other than 0 log warnings and above unless debug).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_doctor(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_tune_batch_size(sub)
    _add_visualize(sub)
    return parser


def _add_doctor(sub) -> None:
    doctor = sub.add_parser("doctor", help="Report what every rank sees and check the Horovod build.")
    doctor.add_argument("--strategy", default=DoctorOptions.strategy, choices=STRATEGIES)
    doctor.add_argument("--hosts", metavar="H1:N,H2:N",
                        help="Pre-flight check of a multi-host launch (names, interfaces, ssh) instead of the rank report.")
    doctor.add_argument("--network-interface", help="With --hosts: the interface(s) horovodrun will be told to use.")
    doctor.add_argument("--ssh-port", type=int, help="With --hosts: the ssh port horovodrun will use.")
    doctor.add_argument("--ssh-identity-file", help="With --hosts: the ssh key horovodrun will use.")


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="Train a model from a YAML config and a CSV/Parquet dataset.")
    train.add_argument("--config", "-c", required=False, help="YAML config (features, combiner, trainer, ...).")
    data = train.add_argument_group("data (one dataset split by the config, or separate files)")
    data.add_argument("--dataset", help="CSV or Parquet file, split per preprocessing.split.")
    data.add_argument("--training-set", help="CSV or Parquet training file.")
    data.add_argument("--validation-set", help="CSV or Parquet validation file.")
    data.add_argument("--test-set", help="CSV or Parquet test file.")
    train.add_argument("--output-directory", default=TrainOptions.output_directory,
                       help="Where run directories go (default: results).")
    train.add_argument("--experiment-name", default=TrainOptions.experiment_name)
    train.add_argument("--model-name", default=TrainOptions.model_name)
    train.add_argument("--resume", metavar="EXPERIMENT_DIR",
                       help="Continue the run in EXPERIMENT_DIR, in place (its saved model config is used). With "
                            "--config, a directory that holds no run yet is where a new run starts (batch jobs).")
    train.add_argument("--skip-save-model", action="store_true")
    train.add_argument("--skip-save-progress", action="store_true")
    train.add_argument("--skip-save-log", action="store_true")
    train.add_argument("--random-seed", type=int, default=TrainOptions.random_seed)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a config value, e.g. --set trainer.epochs=3 (repeatable).")
    train.add_argument("--mlflow-tracking-uri", metavar="URI",
                       help="Log params, metrics and the model to MLflow at URI (file:./mlruns, http://host:5000) "
                            "from rank 0; the same as --set trainer.mlflow.tracking_uri=URI. Needs hvd_trainer[mlflow].")


def _add_evaluate(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="Metrics of a trained model on a dataset.")
    evaluate.add_argument("--model-path", required=True, help="A run directory or its model/ directory.")
    evaluate.add_argument("--dataset", required=True)
    evaluate.add_argument("--split", choices=SPLITS,
                          help="Evaluate only the rows of this split (as the training run split the file).")
    evaluate.add_argument("--output-directory", help="Where evaluation_statistics.json goes (default: the run directory).")
    evaluate.add_argument("--batch-size", type=int, default=EvaluateOptions.batch_size)


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="Predictions of a trained model, as predictions.csv.")
    predict.add_argument("--model-path", required=True)
    predict.add_argument("--dataset", required=True)
    predict.add_argument("--output-directory", required=True)
    predict.add_argument("--batch-size", type=int, default=PredictOptions.batch_size)


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="A trained model as one TorchScript or ONNX file, preprocessing included.")
    export.add_argument("--model-path", required=True, help="A run directory or its model/ directory.")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="torchscript (torch.jit.load) or onnx (onnxruntime; needs hvd_trainer[export]).")
    export.add_argument("--output", help="The model file (default: RUN/exported/model.pt or model.onnx); its "
                                         "signature goes beside it as <file>.signature.json.")


def _add_tune_batch_size(sub) -> None:
    tune = sub.add_parser("tune-batch-size", help="Find the batch size with the best throughput.")
    tune.add_argument("--config", "-c", required=True)
    tune.add_argument("--dataset", required=True)
    tune.add_argument("--random-seed", type=int, default=TuneBatchSizeOptions.random_seed)


def _add_visualize(sub) -> None:
    viz = sub.add_parser("visualize", help="Learning curves (PNG) from training_statistics.json.")
    viz.add_argument("--training-statistics", required=True)
    viz.add_argument("--output", default=VisualizeOptions.output)
