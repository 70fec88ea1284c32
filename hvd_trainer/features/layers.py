"""Fully connected stacks inside encoders (date, vector, set, text), with Ludwig's FCStack settings.

An encoder section holds `fc_layers` (a list of per-layer settings) or `num_fc_layers`, and the
defaults each layer takes when it does not set a key: output_size, activation, dropout, norm,
use_bias. Each layer is Linear -> normalization -> activation -> dropout, Ludwig's FCLayer order.
(The combiner has its own stack in hvd_trainer.models: features never import models.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from torch import nn

from hvd_trainer.features.config import config_field

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "leakyRelu": nn.LeakyReLU,
    "gelu": nn.GELU, "selu": nn.SELU, "linear": nn.Identity,
}
NORMS = ("batch", "layer")


@dataclass
class FCLayerSpec:
    """One entry of an encoder's fc_layers; unset keys take the encoder's values."""

    output_size: Optional[int] = config_field(None, "Width of the layer.", min=1)
    activation: Optional[str] = config_field(None, "Activation.", choices=tuple(ACTIVATIONS))
    dropout: Optional[float] = config_field(None, "Dropout after the activation.", min=0, max=0.999)
    norm: Optional[str] = config_field(None, "batch or layer normalization (null: none).", choices=NORMS)
    use_bias: Optional[bool] = config_field(None, "Give the layer a bias.")


def fc_layer(in_size: int, out_size: int, activation: str = "relu", dropout: float = 0.0,
             norm: Optional[str] = None, use_bias: bool = True) -> nn.Sequential:
    """Linear -> norm -> activation -> dropout."""
    parts: List[nn.Module] = [nn.Linear(in_size, out_size, bias=use_bias)]
    if norm == "batch":
        parts.append(nn.BatchNorm1d(out_size))
    elif norm == "layer":
        parts.append(nn.LayerNorm(out_size))
    parts.append(ACTIVATIONS[activation or "relu"]())
    if dropout and dropout > 0:
        parts.append(nn.Dropout(dropout))
    return nn.Sequential(*parts)


class FCStack(nn.Module):
    """[batch, in_size] -> [batch, output_size]; with no layers, the identity."""

    def __init__(self, in_size: int, layers: Optional[Sequence[FCLayerSpec]], num_layers: int, output_size: int,
                 activation: str = "relu", dropout: float = 0.0, norm: Optional[str] = None, use_bias: bool = True):
        super().__init__()
        specs = list(layers) if layers else [FCLayerSpec() for _ in range(num_layers)]
        modules = []
        size = in_size
        for spec in specs:
            width = spec.output_size if spec.output_size is not None else output_size
            modules.append(fc_layer(
                size, width,
                activation=spec.activation if spec.activation is not None else activation,
                dropout=spec.dropout if spec.dropout is not None else dropout,
                norm=spec.norm if spec.norm is not None else norm,
                use_bias=spec.use_bias if spec.use_bias is not None else use_bias,
            ))
            size = width
        self.layers = nn.Sequential(*modules)
        self.output_size = size

    def forward(self, x):
        return self.layers(x)
