"""JobConfig: the whole config of a job (model, trainer and distributed sections), validated once.

Precedence: command line (`--set a.b=c`) over the YAML file over the defaults of each section's
dataclass. A job is loaded in one of three ways:

    JobConfig.load("config.yaml", ["trainer.epochs=3"])     # a new training run
    JobConfig.for_resume(layout, "config.yaml", overrides)  # continue the run in `layout`
    JobConfig.saved(layout.hyperparameters)                 # the config a trained model was built from

Every section is validated before any work starts, so a typo fails in a second, on every rank,
with a message that names the key.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

from hvd_trainer.config import DistributedConfig, TrainerConfig, load_yaml
from hvd_trainer.config_schema import set_dotted
from hvd_trainer.errors import ConfigError
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.run_layout import MODEL_DIR, MODEL_HYPERPARAMETERS, RunLayout

#: The sections that may change when a run is resumed; everything else describes the model.
RESUMABLE_SECTIONS = ("trainer", "distributed")


@dataclass(frozen=True)
class JobConfig:
    """The typed sections of one job, and the config as it was given."""

    model: ModelConfig
    """Features, combiner and preprocessing (everything but the trainer and distributed sections)."""
    trainer: TrainerConfig
    """The `trainer:` section, with Ludwig's ECD names and defaults."""
    distributed: DistributedConfig
    """The `distributed:` section: strategy, compression, reduction op."""
    as_given: Dict[str, Any]
    """The file with --set applied, before defaults: saved as model_hyperparameters.json."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobConfig":
        """Validate every section (model first, then trainer, then distributed)."""
        model = ModelConfig.from_dict(data)
        trainer = TrainerConfig.from_dict(data.get("trainer"))
        distributed = DistributedConfig.from_dict(data.get("distributed"))
        return cls(model=model, trainer=trainer, distributed=distributed, as_given=dict(data))

    @classmethod
    def load(cls, path: Optional[str], overrides: Sequence[str] = ()) -> "JobConfig":
        """The YAML file at `path` (none: empty) with each `a.b=c` override applied, validated."""
        data = load_yaml(path) if path else {}
        for assignment in overrides:
            set_dotted(data, assignment)
        return cls.from_dict(data)

    @classmethod
    def saved(cls, hyperparameters_path: str) -> "JobConfig":
        """The config a run saved (model_hyperparameters.json), validated."""
        return cls.from_dict(_read_saved_config(hyperparameters_path))

    @classmethod
    def for_resume(cls, layout: RunLayout, path: Optional[str], overrides: Sequence[str] = ()) -> "JobConfig":
        """The saved model config, with trainer settings from the given config and --set applied.

        The checkpoint only fits the saved model, so a given config may change only the
        trainer and distributed sections.
        """
        if not os.path.exists(layout.hyperparameters):
            raise ConfigError(
                f"--resume {layout.root}: there is no {MODEL_DIR}/{MODEL_HYPERPARAMETERS} in it, so it is "
                "not an hvd_trainer run directory (results/<experiment>_<model>). Pass the directory that training created."
            )
        saved = _read_saved_config(layout.hyperparameters)
        given = load_yaml(path) if path else {}
        data = copy.deepcopy(saved)
        if given:
            _check_same_model(layout.root, given, saved)
            data["trainer"] = given.get("trainer", data.get("trainer", {}))
            if "distributed" in given:
                data["distributed"] = given["distributed"]
        for assignment in overrides:
            if not assignment.startswith(tuple(f"{section}." for section in RESUMABLE_SECTIONS)):
                raise ConfigError(
                    f"--set {assignment}: only trainer.* and distributed.* may change when resuming; the model must "
                    "stay the one the checkpoint was trained with."
                )
            set_dotted(data, assignment)
        return cls.from_dict(data)


def command_line_distributed(overrides: Sequence[str]) -> DistributedConfig:
    """The distributed section that the --set assignments alone give, over the defaults.

    Every rank has the same command line but maybe not the same files, so this is what the
    ranks can start talking with before rank 0 has read any config (see commands/shared.py).
    """
    data: Dict[str, Any] = {}
    for assignment in overrides:
        if assignment.partition("=")[0].split(".")[0].strip() == "distributed":
            set_dotted(data, assignment)
    return DistributedConfig.from_dict(data.get("distributed"))


def _read_saved_config(hyperparameters_path: str) -> Dict[str, Any]:
    """The plain dict in a run's model_hyperparameters.json."""
    with open(hyperparameters_path) as fh:
        return json.load(fh)


def _check_same_model(resume_dir: str, given: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    if ModelConfig.from_dict(given).to_dict() != ModelConfig.from_dict(saved).to_dict():
        raise ConfigError(
            f"--resume {resume_dir}: the given config describes another model (features, combiner or "
            "preprocessing differ from the saved model_hyperparameters.json), and the checkpoint only fits the "
            "saved one. Resume without --config, or change only the trainer section (or use --set trainer.X=...)."
        )
