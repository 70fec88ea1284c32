"""The concat combiner: concatenate the encodings, then a stack of fully connected layers.
build_combiner picks the combiner a config names (concat here, tabnet in models/tabnet.py).

Each layer is Linear -> normalization (batch or layer, optional) -> activation -> dropout,
Ludwig's FCLayer order. With no layers the combiner's output is the concatenation itself.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from hvd_trainer.features.config import FCLayerConfig
from hvd_trainer.model_config import CombinerConfig
from hvd_trainer.models.tabnet import TabNetCombiner
from hvd_trainer.tabnet_config import TabNetCombinerConfig

_ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "leakyRelu": nn.LeakyReLU,
    "gelu": nn.GELU, "selu": nn.SELU, "linear": nn.Identity,
}


def fc_layer(in_size: int, spec: FCLayerConfig) -> nn.Sequential:
    parts: List[nn.Module] = [nn.Linear(in_size, spec.output_size, bias=spec.use_bias)]
    if spec.norm == "batch":
        parts.append(nn.BatchNorm1d(spec.output_size))
    elif spec.norm == "layer":
        parts.append(nn.LayerNorm(spec.output_size))
    parts.append(_ACTIVATIONS[spec.activation]())
    if spec.dropout > 0:
        parts.append(nn.Dropout(spec.dropout))
    return nn.Sequential(*parts)


def fc_stack(in_size: int, specs: Sequence[FCLayerConfig]) -> Tuple[nn.Sequential, int]:
    """Layers one after another, and the width of the last (in_size when there are none)."""
    layers = []
    for spec in specs:
        layers.append(fc_layer(in_size, spec))
        in_size = spec.output_size
    return nn.Sequential(*layers), in_size


class ConcatCombiner(nn.Module):
    """[batch, sum of encoding widths] -> [batch, output_size]."""

    def __init__(self, input_sizes: Sequence[int], config: CombinerConfig):
        super().__init__()
        self.fc_stack, self.output_size = fc_stack(int(sum(input_sizes)), config.layer_specs())

    def forward(self, encodings: Sequence[torch.Tensor]) -> torch.Tensor:
        # One encoding (all-number inputs travel as one block) needs no copy through cat.
        return self.fc_stack(encodings[0] if len(encodings) == 1 else torch.cat(list(encodings), dim=-1))


def build_combiner(input_sizes: Sequence[int], config: Union[CombinerConfig, TabNetCombinerConfig]) -> nn.Module:
    """The combiner module for a config section; its `output_size` is the decoders' input width."""
    if isinstance(config, TabNetCombinerConfig):
        return TabNetCombiner(input_sizes, config)
    return ConcatCombiner(input_sizes, config)
