"""Ghost batch normalization (Hoffer et al., 2017), as TabNet and Ludwig use it.

In training, a batch is cut into ceil(batch / virtual_batch_size) chunks (torch.chunk's cut, as
Ludwig's) and each chunk is normalized by its own statistics; each chunk also updates the
running statistics, one momentum step per chunk. In evaluation it is plain batch norm.

It *is* an nn.BatchNorm1d (same buffers, same state-dict keys), so the trainer's BatchNorm rule
covers it unchanged: DistributedStrategy.average_batch_norm_statistics averages its running
mean and variance over ranks before every evaluation and checkpoint.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class GhostBatchNorm(nn.BatchNorm1d):
    def __init__(self, num_features: int, virtual_batch_size: Optional[int], momentum: float = 0.05,
                 eps: float = 1e-3):
        super().__init__(num_features, eps=eps, momentum=momentum)
        #: Rows per chunk in training; None: one chunk (plain batch norm).
        self.virtual_batch_size = virtual_batch_size

    def chunks(self, rows: int) -> int:
        """How many chunks a training batch of `rows` is cut into (torch.chunk may make fewer)."""
        return math.ceil(rows / self.virtual_batch_size) if self.virtual_batch_size else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        if not self.training:
            return super().forward(x)
        if rows == 1:
            # One row has no variance: normalize it by the running statistics, leave them as they are.
            return self._with_running_statistics(x)
        if not self.virtual_batch_size or rows <= self.virtual_batch_size:
            return super().forward(x)
        # A chunk of one row (a batch one more than a multiple) passes through unnormalized, as in Ludwig.
        return torch.cat([super(GhostBatchNorm, self).forward(c) if c.shape[0] > 1 else c
                          for c in x.chunk(self.chunks(rows), 0)], 0)

    def _with_running_statistics(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"
