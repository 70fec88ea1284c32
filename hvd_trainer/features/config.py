"""Config pieces that every feature type shares: the field helper, a feature's name and column,
and the loss, decoder and passthrough-encoder sections.

Each type module (number.py, category.py, ...) builds its input and output config dataclasses
from these; hvd_trainer.model_config reads them with config_schema.from_dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def config_field(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with an immutable default and its one-line help (shown in errors).

    `meta` holds what config_schema checks: choices, min, max, gt.
    """
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class FeatureConfig:
    name: str = config_field("", "The feature's name; also the column read, unless column is set.")
    type: str = config_field("", "number, category, binary, set, text, vector or date.")
    column: Optional[str] = config_field(None, "The column of the dataset (default: the name).")

    @property
    def column_name(self) -> str:
        return self.column if self.column is not None else self.name


@dataclass
class PassthroughEncoderConfig:
    type: str = config_field("passthrough", "The (normalized) value itself is the encoding.", choices=("passthrough",))


@dataclass
class LossConfig:
    type: Optional[str] = config_field(None, "The loss (only the feature type's default is implemented).")
    weight: float = config_field(1.0, "Weight of this output's loss in the combined loss.", min=0)


@dataclass
class DecoderConfig:
    type: Optional[str] = config_field(None, "classifier (category) or regressor (number, binary).",
                                       choices=("classifier", "regressor"))


@dataclass
class OutputFeatureConfig(FeatureConfig):
    """The sections every output feature has; each type's subclass gives preprocessing its dataclass."""

    preprocessing: Any = None
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
