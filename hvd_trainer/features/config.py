"""Config pieces that every feature type shares: the field helper, a feature's name and column,
and the loss, decoder and passthrough-encoder sections.

Each type module (number.py, category.py, ...) builds its input and output config dataclasses
from these; hvd_trainer.model_config reads them with config_schema.from_dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "leakyRelu", "gelu", "selu", "linear")
NORMS = ("batch", "layer")


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
class FCLayerConfig:
    """One fully connected layer (of combiner.fc_layers or decoder.fc_layers); unset keys take the stack's."""

    output_size: Optional[int] = config_field(None, "Width of the layer.", min=1)
    activation: Optional[str] = config_field(None, "Activation.", choices=ACTIVATIONS)
    dropout: Optional[float] = config_field(None, "Dropout after the activation.", min=0, max=0.999)
    norm: Optional[str] = config_field(None, "batch or layer normalization (null: none).", choices=NORMS)
    use_bias: Optional[bool] = config_field(None, "Give the layer a bias.")


def resolve_layers(layers: Optional[List[FCLayerConfig]], num_layers: int, output_size: int, activation: str,
                   dropout: float, norm: Optional[str], use_bias: bool) -> List[FCLayerConfig]:
    """Every layer of a stack with its settings resolved: `layers` if given, else `num_layers` default layers.

    Ludwig's FCStack rule: a key a layer leaves out takes the stack's default.
    """
    chosen = layers if layers is not None else [FCLayerConfig() for _ in range(num_layers)]
    return [
        FCLayerConfig(
            output_size=l.output_size if l.output_size is not None else output_size,
            activation=l.activation if l.activation is not None else activation,
            dropout=l.dropout if l.dropout is not None else dropout,
            norm=l.norm if l.norm is not None else norm,
            use_bias=l.use_bias if l.use_bias is not None else use_bias,
        )
        for l in chosen
    ]


@dataclass
class DecoderConfig:
    """An output's decoder: optional fully connected layers (Ludwig's fc_stack), then one linear projection."""

    type: Optional[str] = config_field(None, "classifier (category) or regressor (number, binary).",
                                       choices=("classifier", "regressor"))
    fc_layers: Optional[List[FCLayerConfig]] = config_field(None, "Per-layer settings; overrides num_fc_layers.")
    num_fc_layers: int = config_field(0, "Fully connected layers before the projection (fc_layers overrides).",
                                      min=0)
    fc_output_size: int = config_field(256, "Width of each fully connected layer.", min=1)
    fc_activation: str = config_field("relu", "Activation of each layer.", choices=ACTIVATIONS)
    fc_dropout: float = config_field(0.0, "Dropout after each layer's activation.", min=0, max=0.999)
    fc_norm: Optional[str] = config_field(None, "batch or layer normalization (null: none).", choices=NORMS)
    fc_use_bias: bool = config_field(True, "Give the layers a bias.")

    def layer_specs(self) -> List[FCLayerConfig]:
        """The decoder's fully connected layers, every setting resolved (empty: the projection only)."""
        return resolve_layers(self.fc_layers, self.num_fc_layers, self.fc_output_size, self.fc_activation,
                              self.fc_dropout, self.fc_norm, self.fc_use_bias)


@dataclass
class OutputFeatureConfig(FeatureConfig):
    """The sections every output feature has; each type's subclass gives preprocessing its dataclass."""

    preprocessing: Any = None
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
