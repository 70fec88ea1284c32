"""Train your own nn.Module: ModuleAdapter, and TensorInput for its dense inputs."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.models.base import BaseModel


class TensorInput(InputFeature):
    """A dense input of a fixed per-sample shape (what a user's own module usually takes)."""

    def __init__(self, name: str, shape: Sequence[int], dtype: torch.dtype = torch.float32):
        super().__init__(name)
        self.shape = tuple(shape)
        self.dtype = dtype

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        if self.dtype.is_floating_point:
            return torch.randn((batch_size,) + self.shape, dtype=self.dtype)
        return torch.zeros((batch_size,) + self.shape, dtype=self.dtype)

    def input_tensor(self, column):
        return column_tensor(column, self.dtype)


class ModuleAdapter(BaseModel):
    """Train your own nn.Module with hvd_trainer.

    >>> net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    >>> model = ModuleAdapter(net, inputs=[TensorInput("x", (64,))], outputs=[CategoryOutput("y", 10)])

    The module gets the single input tensor (or the dict of inputs when there are several) and
    returns logits (or a dict of logits keyed by output name when there are several outputs).
    """

    def __init__(self, module: nn.Module, inputs: Sequence[InputFeature], outputs: Sequence[OutputFeature]):
        super().__init__()
        self.module = module
        self.input_features = {f.name: f for f in inputs}
        self.output_features = {f.name: f for f in outputs}
        self._single_input = next(iter(self.input_features)) if len(self.input_features) == 1 else None
        self._single_output = next(iter(self.output_features)) if len(self.output_features) == 1 else None

    def forward(self, inputs):
        out = self.module(inputs[self._single_input] if self._single_input else inputs)
        if isinstance(out, torch.Tensor):
            if self._single_output is None:
                raise TypeError("The module returned one tensor, but the model has several outputs; return a dict of logits keyed by output name.")
            return {self._single_output: out}
        return out
