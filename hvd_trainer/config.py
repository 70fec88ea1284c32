"""Typed configuration: the trainer section (Ludwig's ECD names and defaults) and the
distributed section. Model features live in hvd_trainer.model_config and hvd_trainer.features.

Precedence, applied by the CLI: command line (--set a.b=c) over the YAML file over defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple, Union

import yaml

from hvd_trainer.config_schema import from_dict, setting, to_dict
from hvd_trainer.errors import ConfigError

OPTIMIZER_TYPES = ("adam", "adamw", "sgd", "lbfgs", "adagrad", "adadelta", "adamax", "nadam", "rmsprop")

# Which optional optimizer keys each optimizer accepts (None in the config = torch's default).
OPTIMIZER_KEYS = {
    "adam": {"betas", "eps", "weight_decay", "amsgrad", "fused"},
    "adamw": {"betas", "eps", "weight_decay", "amsgrad", "fused"},
    "adamax": {"betas", "eps", "weight_decay"},
    "nadam": {"betas", "eps", "weight_decay", "momentum_decay"},
    "sgd": {"momentum", "weight_decay", "dampening", "nesterov", "fused"},
    "rmsprop": {"momentum", "weight_decay", "eps", "alpha", "centered"},
    "adagrad": {"weight_decay", "eps", "lr_decay", "initial_accumulator_value", "fused"},
    "adadelta": {"weight_decay", "eps", "rho"},
    "lbfgs": {"max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size", "line_search_fn"},
}


@dataclass
class OptimizerConfig:
    type: str = setting("adam", "Optimizer name.", choices=OPTIMIZER_TYPES)
    betas: Optional[Tuple[float, float]] = setting(None, "Adam-family coefficients (default 0.9, 0.999).")
    eps: Optional[float] = setting(None, "Term added for numerical stability.", gt=0)
    weight_decay: Optional[float] = setting(None, "Decoupled (adamw) or L2 (others) weight decay.", min=0)
    amsgrad: Optional[bool] = setting(None, "Use the AMSGrad variant (adam, adamw).")
    fused: Optional[bool] = setting(
        None, "torch's fused implementation, one kernel for every parameter (adam, adamw, sgd, adagrad). Default: "
              "on for adam and adamw without mixed precision (a small MLP's step ~7% faster on CPU, a 1M-parameter "
              "one ~25%), else off; false gives torch's per-tensor loop, whose results it matches to rounding.")
    momentum: Optional[float] = setting(None, "Momentum factor (sgd, rmsprop).", min=0)
    dampening: Optional[float] = setting(None, "Dampening for momentum (sgd).", min=0)
    nesterov: Optional[bool] = setting(None, "Nesterov momentum (sgd; needs momentum > 0).")
    alpha: Optional[float] = setting(None, "Smoothing constant (rmsprop).", min=0)
    centered: Optional[bool] = setting(None, "Centered RMSProp.")
    rho: Optional[float] = setting(None, "Running-average coefficient (adadelta).", min=0, max=1)
    lr_decay: Optional[float] = setting(None, "Learning-rate decay (adagrad).", min=0)
    initial_accumulator_value: Optional[float] = setting(None, "Initial accumulator (adagrad).", min=0)
    momentum_decay: Optional[float] = setting(None, "Momentum decay (nadam).", min=0)
    max_iter: Optional[int] = setting(None, "Iterations per step (lbfgs).", min=1)
    max_eval: Optional[int] = setting(None, "Function evaluations per step (lbfgs).", min=1)
    tolerance_grad: Optional[float] = setting(None, "First-order optimality tolerance (lbfgs).", min=0)
    tolerance_change: Optional[float] = setting(None, "Function/parameter change tolerance (lbfgs).", min=0)
    history_size: Optional[int] = setting(None, "Update history size (lbfgs).", min=1)
    line_search_fn: Optional[str] = setting(None, "Line search (lbfgs).", choices=("strong_wolfe",))

    def __post_init__(self):
        allowed = OPTIMIZER_KEYS[self.type]
        for key in sorted(set(OPTIMIZER_KEYS_ALL) - allowed):
            if getattr(self, key) is not None:
                users = sorted(t for t, keys in OPTIMIZER_KEYS.items() if key in keys)
                raise ConfigError(
                    f"trainer.optimizer.{key} does not apply to the {self.type} optimizer (it is used "
                    f"by {', '.join(users)}). Remove it, or change trainer.optimizer.type; {self.type} "
                    f"accepts: {', '.join(sorted(allowed))}."
                )
        if self.nesterov and not (self.momentum and self.momentum > 0):
            raise ConfigError(
                "trainer.optimizer.nesterov is true but momentum is not set above 0; Nesterov "
                "momentum needs momentum, e.g. trainer.optimizer.momentum: 0.9."
            )

    def torch_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments for the torch optimizer class (only keys that were set)."""
        return {k: getattr(self, k) for k in OPTIMIZER_KEYS[self.type] if getattr(self, k) is not None}


OPTIMIZER_KEYS_ALL = tuple(sorted(set().union(*OPTIMIZER_KEYS.values())))


@dataclass
class GradientClippingConfig:
    clipglobalnorm: Optional[float] = setting(0.5, "Clip the global norm of all gradients to this.", gt=0)
    clipnorm: Optional[float] = setting(None, "Clip the gradients' norm to this (after clipglobalnorm).", gt=0)
    clipvalue: Optional[float] = setting(None, "Clip each gradient value to [-clipvalue, clipvalue].", gt=0)


@dataclass
class LRSchedulerConfig:
    decay: Optional[str] = setting(None, "Decay after warmup.", choices=("linear", "exponential", "cosine"))
    decay_rate: float = setting(0.96, "Exponential decay rate.", gt=0, max=1)
    decay_steps: int = setting(10000, "Steps over which the exponential decay applies decay_rate once.", min=1)
    staircase: bool = setting(False, "Exponential decay in whole steps of decay_steps.")
    reduce_on_plateau: int = setting(0, "How many times the LR may be reduced on a plateau (0: never).", min=0)
    reduce_on_plateau_patience: int = setting(10, "Evaluations without improvement before a reduction.", min=1)
    reduce_on_plateau_rate: float = setting(0.1, "Factor applied to the LR at each reduction.", gt=0, max=1)
    warmup_evaluations: float = setting(0, "Warmup length in evaluation periods.", min=0)
    warmup_fraction: float = setting(0.0, "Warmup length as a fraction of all training steps.", min=0, max=1)
    reduce_eval_metric: str = setting("loss", "Metric watched for plateaus.")
    reduce_eval_split: str = setting("training", "Split watched for plateaus.", choices=("training", "validation", "test"))
    t_0: Optional[int] = setting(None, "Steps in the first cosine cycle (default: all training steps).", min=1)
    t_mult: int = setting(1, "Factor growing each later cosine cycle.", min=1)
    eta_min: float = setting(0.0, "Minimum LR of the cosine schedule.", min=0)

    def __post_init__(self):
        if self.warmup_evaluations and self.warmup_fraction:
            raise ConfigError(
                "trainer.learning_rate_scheduler sets both warmup_evaluations and warmup_fraction; "
                "they describe the same warmup two ways. Keep one and set the other to 0."
            )


@dataclass
class MLflowConfig:
    """`trainer.mlflow:` log the run to MLflow from rank 0 (needs `pip install 'hvd_trainer[mlflow]'`)."""

    tracking_uri: Optional[str] = setting(
        None, "Where MLflow keeps runs (file:./mlruns, http://host:5000); null: no MLflow logging.")
    experiment_name: str = setting("hvd_trainer", "The MLflow experiment the run goes into (created if missing).")
    run_name: Optional[str] = setting(None, "The MLflow run's name (null: the run directory's name).")
    log_model: bool = setting(True, "Log the model directory (weights, config, metadata, logs) as an artifact at the end.")

    def __post_init__(self):
        if self.tracking_uri == "":
            raise ConfigError("trainer.mlflow.tracking_uri is an empty string; give a URI such as file:./mlruns, "
                              "or leave it out to turn MLflow logging off.")


@dataclass
class TrainerConfig:
    """The `trainer:` section, with Ludwig's ECD trainer names and defaults."""

    learning_rate: float = setting(0.001, "Base learning rate, before scaling by the number of ranks.", gt=0)
    epochs: int = setting(100, "Passes over the training set (train_steps overrides it).", min=1)
    train_steps: Optional[int] = setting(None, "Total optimizer steps; overrides epochs.", min=1)
    batch_size: Union[Literal["auto"], int] = setting("auto", "Per-rank batch size, or auto to tune it.", min=1)
    eval_batch_size: Union[None, Literal["auto"], int] = setting(None, "Evaluation batch size (null: batch_size).", min=1)
    max_batch_size: int = setting(2**40, "Upper bound for batch size tuning and increases.", min=1)
    gradient_accumulation_steps: Union[Literal["auto"], int] = setting("auto", "Backward passes per optimizer step.", min=1)
    early_stop: int = setting(5, "Evaluations without validation improvement before stopping (-1: never).", min=-1)
    steps_per_checkpoint: int = setting(0, "Evaluate and checkpoint every N steps (0: once per epoch).", min=0)
    checkpoints_per_epoch: int = setting(0, "Evaluate and checkpoint N times per epoch (0: once).", min=0)
    evaluate_training_set: bool = setting(False, "Run a full pass over the training set at each evaluation.")
    validation_field: Optional[str] = setting(None, "Output feature watched for improvement (default: the first, or 'combined').")
    validation_metric: Optional[str] = setting(None, "Metric watched for improvement (default: loss).")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"help": "Optimizer."})
    regularization_type: Optional[str] = setting("l2", "Penalty added to the loss.", choices=("l1", "l2", "l1_l2"))
    regularization_lambda: float = setting(0.0, "Weight of the penalty.", min=0)
    should_shuffle: bool = setting(True, "Reshuffle the training set every epoch.")
    increase_batch_size_on_plateau: int = setting(0, "How many times the batch size may grow on a plateau.", min=0)
    increase_batch_size_on_plateau_patience: int = setting(5, "Evaluations without improvement before growing.", min=1)
    increase_batch_size_on_plateau_rate: float = setting(2.0, "Factor applied to the batch size.", gt=1)
    increase_batch_size_on_plateau_max: int = setting(512, "Largest batch size reached by growing.", min=1)
    increase_batch_size_eval_metric: str = setting("loss", "Metric watched for batch size growth.")
    increase_batch_size_eval_split: str = setting("training", "Split watched for batch size growth.", choices=("training", "validation", "test"))
    gradient_clipping: GradientClippingConfig = field(default_factory=GradientClippingConfig, metadata={"help": "Gradient clipping."})
    learning_rate_scaling: str = setting("linear", "How the LR grows with the number of ranks.", choices=("constant", "sqrt", "linear"))
    use_mixed_precision: bool = setting(False, "Automatic mixed precision (CUDA only).")
    compile: bool = setting(False, "Wrap the model with torch.compile.")
    learning_rate_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig, metadata={"help": "LR schedule."})
    skip_all_evaluation: bool = setting(False, "Skip evaluation entirely (checkpoints are still written).")
    checkpoint_in_background: bool = setting(
        True, "Copy the state in memory and write checkpoints from a thread while training goes on (needs host "
        "memory for up to two more copies of the model and optimizer state while an evaluation's files are "
        "written; false writes them in the training loop).")
    mlflow: MLflowConfig = field(default_factory=MLflowConfig, metadata={"help": "MLflow logging (off by default)."})

    def __post_init__(self):
        if self.steps_per_checkpoint and self.checkpoints_per_epoch:
            raise ConfigError(
                f"trainer.steps_per_checkpoint ({self.steps_per_checkpoint}) and "
                f"trainer.checkpoints_per_epoch ({self.checkpoints_per_epoch}) are both set, but only "
                "one way of spacing checkpoints can be used. Set one of them to 0."
            )
        if isinstance(self.batch_size, int) and self.batch_size > self.max_batch_size:
            raise ConfigError(
                f"trainer.batch_size ({self.batch_size}) is larger than trainer.max_batch_size "
                f"({self.max_batch_size}). Lower batch_size or raise max_batch_size."
            )
        if (self.use_mixed_precision or self.compile) and self.optimizer.type == "lbfgs":
            raise ConfigError(
                "trainer.optimizer.type lbfgs cannot be combined with use_mixed_precision or compile: "
                "the L-BFGS closure path runs in full precision on the eager model. Turn those off "
                "or choose another optimizer."
            )
        if self.use_mixed_precision and self.optimizer.fused:
            raise ConfigError(
                "trainer.optimizer.fused is true together with use_mixed_precision, but a fused optimizer takes its "
                "gradient scale inside step(), which Horovod's DistributedOptimizer does not pass on. Remove "
                "trainer.optimizer.fused (it then stays off under mixed precision) or turn mixed precision off."
            )

    # ---- derived values ------------------------------------------------------------------
    def learning_rate_scaling_resolved(self) -> str:
        """learning_rate_scaling, except that L-BFGS never scales: each of its steps is the full-batch step.

        Data-parallel L-BFGS averages the loss and gradients over every rank inside each closure
        call (hvd_trainer.step), so np ranks take the same step as one process on all their rows;
        a larger learning rate would only make that step longer.
        """
        return "constant" if self.optimizer.type == "lbfgs" else self.learning_rate_scaling

    def gradient_accumulation_steps_resolved(self) -> int:
        """'auto' means 1: hvd_trainer scales out with ranks rather than accumulation."""
        g = self.gradient_accumulation_steps
        return 1 if g == "auto" else int(g)

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "TrainerConfig":
        return from_dict(cls, data, "trainer")

    def to_dict(self) -> Dict[str, Any]:
        return to_dict(self)


@dataclass
class HorovodConfig:
    """`distributed.horovod:` Horovod's own knobs. null leaves a knob to the trainer, which chooses it from the
    ranks per host, the cores, the controller and the GPUs (`python -m hvd_trainer doctor` shows the choice and
    why); a HOROVOD_* (or OMPI_MCA_*) variable in the environment wins over both."""

    cycle_time_ms: Optional[float] = setting(
        None, "Milliseconds between Horovod's negotiation cycles (HOROVOD_CYCLE_TIME; null: the trainer's choice).", gt=0)
    fusion_threshold_mb: Optional[float] = setting(
        None, "Tensor fusion buffer in MiB, 0 to fuse nothing (HOROVOD_FUSION_THRESHOLD; null: the trainer's choice).",
        min=0)
    yield_when_idle: Optional[bool] = setting(
        None, "MPI ranks yield their core while they wait (OMPI_MCA_mpi_yield_when_idle; null: the trainer's choice).")
    torch_threads: Optional[int] = setting(
        None, "torch threads per rank on the CPU (OMP_NUM_THREADS wins; null: the host's cores / its ranks).", min=1)
    cpu_affinity: Optional[bool] = setting(
        None, "Run each CPU rank of a host on cores of its own, set before hvd.init() (HVD_TRAINER_CPU_AFFINITY; "
        "null: the trainer's choice).")
    autotune: bool = setting(False, "Let Horovod tune cycle time and fusion while training runs (HOROVOD_AUTOTUNE).")
    autotune_log: Optional[str] = setting(None, "CSV file where the autotuner logs each trial (HOROVOD_AUTOTUNE_LOG).")
    timeline: Optional[str] = setting(
        None, "JSON file where rank 0 records every collective, for chrome://tracing or Perfetto (HOROVOD_TIMELINE).")
    timeline_mark_cycles: bool = setting(False, "Mark each negotiation cycle in the timeline (HOROVOD_TIMELINE_MARK_CYCLES).")

    def __post_init__(self):
        if self.autotune_log and not self.autotune:
            raise ConfigError(
                f"distributed.horovod.autotune_log is {self.autotune_log!r} but distributed.horovod.autotune is false, "
                "so there would be nothing to log. Set distributed.horovod.autotune: true, or remove autotune_log.")
        if self.timeline_mark_cycles and not self.timeline:
            raise ConfigError(
                "distributed.horovod.timeline_mark_cycles is true but distributed.horovod.timeline is not set, so "
                "there is no timeline to mark. Set distributed.horovod.timeline: path/to/timeline.json.")
        for key in ("autotune_log", "timeline"):
            if getattr(self, key) == "":
                raise ConfigError(f"distributed.horovod.{key} is an empty string; give a file path or leave it out.")


@dataclass
class DistributedConfig:
    """hvd_trainer's own `distributed:` section."""

    strategy: str = setting("auto", "auto (Horovod when launched by horovodrun, mpirun or srun), horovod or local.", choices=("auto", "horovod", "local"))
    compression: str = setting("none", "Gradient compression on the wire.", choices=("none", "fp16"))
    op: str = setting("average", "Gradient reduction.", choices=("average", "sum", "adasum"))
    horovod: HorovodConfig = field(default_factory=HorovodConfig, metadata={"help": "Horovod's knobs (cycle time, fusion, autotune, timeline)."})
    elastic: Optional[bool] = setting(
        None, "Elastic training (survive a lost host, grow when one is added): null follows the launcher "
        "(horovodrun --min-np/--max-np --host-discovery-script sets HOROVOD_ELASTIC=1), true requires it, false turns it off.")
    elastic_commit_steps: int = setting(
        100, "Under elastic training, optimizer steps between two in-memory commits of the state (also at every "
        "evaluation); a lost host costs at most this many steps.", min=1)

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "DistributedConfig":
        return from_dict(cls, data, "distributed")


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML config file with safe_load, with clear errors for missing or broken files."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"The config file {path} does not exist. Check the path passed to --config.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"The config file {path} is not valid YAML: {e}. Fix the syntax at the position shown.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"The config file {path} holds a {type(data).__name__}, not a mapping; it must have top-level "
            "keys such as input_features, output_features and trainer."
        )
    return data
