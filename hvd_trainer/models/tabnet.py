"""The tabnet combiner: TabNet (Arik & Pfister, 2019) over the concatenated encodings, as Ludwig builds it.

    x = BatchNorm(concat(encodings))                                  [batch, F]
    h = FeatureTransformer_0(x)                                       [batch, N_d + N_a]
    for step in 1..N_steps:
        mask  = sparsemax(GhostBN(Linear(h[:, N_d:])) * prior)        [batch, F], rows sum to 1
        prior = prior * (gamma - mask)                                 features used are damped
        h     = FeatureTransformer_step(mask * x)
        out  += relu(h[:, :N_d])
    output = Dropout(Linear(out))                                     [batch, N_d]

A feature transformer is num_total_blocks blocks of Linear (no bias) -> ghost batch norm -> GLU,
each after the first added to its input and scaled by sqrt(1/2). The linear layers of the first
num_shared_blocks blocks are shared by every step's transformer (owned here once, so each
weight has one name and one gradient allreduce). The sparsity loss, lambda_sparse times the
masks' mean entropy per step, is returned with the output and added to the training loss.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from hvd_trainer.models.ghost_batch_norm import GhostBatchNorm
from hvd_trainer.models.sparse_attention import MAPS
from hvd_trainer.tabnet_config import TabNetCombinerConfig

#: Added inside the log of the entropy, as Ludwig does, so that exact zeros of a mask count as 0.
_LOG_EPSILON = 1e-5


def _norm(width: int, config: TabNetCombinerConfig) -> GhostBatchNorm:
    return GhostBatchNorm(width, config.bn_virtual_bs, momentum=config.bn_momentum, eps=config.bn_epsilon)


class FeatureTransformer(nn.Module):
    """[batch, in] -> [batch, width]; the shared linear layers are passed to forward, not owned."""

    def __init__(self, input_size: int, width: int, config: TabNetCombinerConfig):
        super().__init__()
        self.num_shared = config.num_shared_blocks
        own = range(self.num_shared, config.num_total_blocks)
        # GLU halves the width: each linear layer makes 2 * width.
        self.own_linears = nn.ModuleList(
            nn.Linear(input_size if i == 0 else width, 2 * width, bias=False) for i in own)
        self.norms = nn.ModuleList(_norm(2 * width, config) for _ in range(config.num_total_blocks))

    def forward(self, x: torch.Tensor, shared: Sequence[nn.Linear]) -> torch.Tensor:
        linears = list(shared) + list(self.own_linears)
        hidden = F.glu(self.norms[0](linears[0](x)), dim=-1)
        for linear, norm in zip(linears[1:], self.norms[1:]):
            # Scaled by sqrt(1/2) so that the residual sum keeps the variance of its parts.
            hidden = (F.glu(norm(linear(hidden)), dim=-1) + hidden) * (0.5 ** 0.5)
        return hidden


class AttentiveTransformer(nn.Module):
    """[batch, N_a] attention part, [batch, F] prior -> [batch, F] mask (each row sums to 1)."""

    def __init__(self, size: int, input_size: int, config: TabNetCombinerConfig):
        super().__init__()
        self.linear = nn.Linear(size, input_size, bias=False)
        self.norm = _norm(input_size, config)
        self.normalize = MAPS[config.entmax_mode]

    def forward(self, attention: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        scores = self.norm(self.linear(attention)) * prior
        # The sort and cumulative sums of the map are done in float32 even under mixed precision.
        return self.normalize(scores.float(), -1)


class TabNet(nn.Module):
    """[batch, input_size] -> ([batch, output_size], sparsity loss, the masks of each step)."""

    def __init__(self, input_size: int, config: TabNetCombinerConfig):
        super().__init__()
        self.config = config
        self.output_size = config.output_size
        width = config.size + config.output_size
        self.input_norm = nn.BatchNorm1d(input_size, momentum=config.bn_momentum, eps=config.bn_epsilon)
        self.shared_linears = nn.ModuleList(
            nn.Linear(input_size if i == 0 else width, 2 * width, bias=False) for i in range(config.num_shared_blocks))
        # Transformer 0 reads the unmasked input; transformer i >= 1 reads step i's masked input.
        self.feature_transformers = nn.ModuleList(
            FeatureTransformer(input_size, width, config) for _ in range(config.num_steps + 1))
        self.attentive_transformers = nn.ModuleList(
            AttentiveTransformer(config.size, input_size, config) for _ in range(config.num_steps))
        self.final_projection = nn.Linear(config.output_size, config.output_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[torch.Tensor]]:
        x = self._normalize_input(x)
        hidden = self.feature_transformers[0](x, self.shared_linears)
        prior = torch.ones_like(x)
        decision = None
        entropy = None
        masks = []
        want_loss = self.training and self.config.sparsity != 0
        for attentive, transformer in zip(self.attentive_transformers, self.feature_transformers[1:]):
            mask = attentive(hidden[:, self.output_size:], prior).to(x.dtype)
            # gamma = 1: a feature fully used once is never used again; larger gamma lets it back.
            prior = prior * (self.config.relaxation_factor - mask)
            if want_loss:
                step = torch.mean(torch.sum(-mask * torch.log(mask + _LOG_EPSILON), dim=1))
                entropy = step if entropy is None else entropy + step
            masks.append(mask)
            hidden = transformer(mask * x, self.shared_linears)
            step_decision = F.relu(hidden[:, :self.output_size])
            decision = step_decision if decision is None else decision + step_decision
        loss = None if entropy is None else self.config.sparsity * entropy / self.config.num_steps
        return self.final_projection(decision), loss, masks

    def _normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            # One row has no batch statistics: use the running ones and leave them unchanged.
            norm = self.input_norm
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return self.input_norm(x)


class TabNetCombiner(nn.Module):
    """[encodings] -> ([batch, output_size], sparsity loss or None). Encodings are flattened and concatenated."""

    #: FeatureModel adds the second element of forward's result to the training loss.
    returns_loss = True

    def __init__(self, input_sizes: Sequence[int], config: TabNetCombinerConfig):
        super().__init__()
        self.tabnet = TabNet(int(sum(input_sizes)), config)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.output_size = config.output_size

    def forward(self, encodings: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        flat = [e.reshape(e.shape[0], -1) for e in encodings]
        hidden, loss, _ = self.tabnet(flat[0] if len(flat) == 1 else torch.cat(flat, dim=-1))
        return self.dropout(hidden), loss
