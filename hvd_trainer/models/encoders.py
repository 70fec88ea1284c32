"""Input features of the config-driven model: how a preprocessed column becomes an encoding.

Each input feature knows its tensor (dtype, sample batch) and builds its encoder module:

- number, binary: passthrough, the (normalised) value as a vector of width 1;
- category: `dense`, a trainable embedding; `onehot` and `sparse`, a fixed one-hot vector
  (Ludwig's sparse encoder is a one-hot embedding).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hvd_trainer.models.base import InputFeature
from hvd_trainer.models.columns import column_tensor
from hvd_trainer.models.config import CategoryInputConfig, FeatureConfig


class Passthrough(nn.Module):
    """[batch] values -> [batch, 1] encodings."""

    output_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().reshape(-1, 1)


class DenseEmbedding(nn.Module):
    """A trainable embedding per category (index 0 is <UNK>)."""

    def __init__(self, vocab_size: int, embedding_size: int, trainable: bool = True, dropout: float = 0.0):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_size)
        self.embeddings.weight.requires_grad_(trainable)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embeddings(x.long()))


class OneHot(nn.Module):
    """A fixed one-hot vector per category; no parameters."""

    def __init__(self, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.one_hot(x.long(), self.vocab_size).float())


class NumberInput(InputFeature):
    """A float32 column (already normalised by preprocessing)."""

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size)

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.float32)

    def build_encoder(self) -> nn.Module:
        return Passthrough()


class BinaryInput(NumberInput):
    """A float32 column of 0/1."""

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, 2, (batch_size,)).float()


class CategoryInput(InputFeature):
    """An int64 column of vocabulary indices."""

    def __init__(self, name: str, vocab_size: int, config: CategoryInputConfig):
        super().__init__(name)
        self.vocab_size = vocab_size
        self.config = config

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch_size,))

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.int64)

    def build_encoder(self) -> nn.Module:
        enc = self.config.encoder
        if enc.type == "dense":
            return DenseEmbedding(self.vocab_size, enc.embedding_size, enc.embeddings_trainable, enc.dropout)
        return OneHot(self.vocab_size, enc.dropout)


def create_input_feature(config: FeatureConfig, metadata: Mapping[str, Any]) -> InputFeature:
    """The InputFeature for one configured input, sized from its training set metadata."""
    if config.type == "category":
        return CategoryInput(config.name, int(metadata[config.name]["vocab_size"]), config)
    if config.type == "binary":
        return BinaryInput(config.name)
    return NumberInput(config.name)
