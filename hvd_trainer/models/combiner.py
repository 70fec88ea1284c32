"""The concat combiner: concatenate the encodings, then a stack of fully connected layers.
build_combiner picks the combiner a config names (concat here, tabnet in models/tabnet.py).

Each layer is Linear -> normalization (batch or layer, optional) -> activation -> dropout,
Ludwig's FCLayer order. With no layers the combiner's output is the concatenation itself.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
from torch import nn

from hvd_trainer.model_config import CombinerConfig, FCLayerConfig
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


class ConcatCombiner(nn.Module):
    """[batch, sum of encoding widths] -> [batch, output_size]."""

    def __init__(self, input_sizes: Sequence[int], config: CombinerConfig):
        super().__init__()
        size = int(sum(input_sizes))
        layers = []
        for spec in config.layer_specs():
            layers.append(fc_layer(size, spec))
            size = spec.output_size
        self.fc_stack = nn.Sequential(*layers)
        self.output_size = size

    def forward(self, encodings: Sequence[torch.Tensor]) -> torch.Tensor:
        # One encoding (all-number inputs travel as one block) needs no copy through cat.
        return self.fc_stack(encodings[0] if len(encodings) == 1 else torch.cat(list(encodings), dim=-1))


def build_combiner(input_sizes: Sequence[int], config: Union[CombinerConfig, TabNetCombinerConfig]) -> nn.Module:
    """The combiner module for a config section; its `output_size` is the decoders' input width."""
    if isinstance(config, TabNetCombinerConfig):
        return TabNetCombiner(input_sizes, config)
    return ConcatCombiner(input_sizes, config)
