"""Sparsemax and 1.5-entmax: softmax-like maps onto the simplex that give exact zeros.

TabNet's attentive transformer turns each row's scores into a feature mask with one of them.
Both have closed forms found by sorting a row (Martins & Astudillo, 2016; Peters, Niculae &
Martins, 2019):

    sparsemax(z) = max(z - tau, 0)          sum = 1 fixes tau
    entmax15(z)  = max(z / 2 - tau, 0) ** 2  sum = 1 fixes tau

Each is an autograd Function with its closed-form backward: the gradient flows only through the
support (the non-zero entries), without differentiating through the sort.
"""
from __future__ import annotations

import torch


def _ranks(z: torch.Tensor, dim: int) -> torch.Tensor:
    """1, 2, ..., n along `dim`, shaped to broadcast against z."""
    n = z.shape[dim]
    shape = [1] * z.dim()
    shape[dim] = n
    return torch.arange(1, n + 1, device=z.device, dtype=z.dtype).view(shape)


class _Sparsemax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        # Shifting by the row's maximum changes nothing (tau shifts with it) and keeps sums small.
        z = z - z.amax(dim=dim, keepdim=True)
        ordered, _ = torch.sort(z, dim=dim, descending=True)
        cumulative = ordered.cumsum(dim) - 1
        ranks = _ranks(z, dim)
        # The k-th largest entry is in the support while it exceeds the mean of the k largest minus 1/k.
        # At least 1 (the largest entry always qualifies); the clamp only matters for NaN scores, which
        # then come out as NaN for the trainer's NaN check instead of as an index error.
        support = (ranks * ordered > cumulative).sum(dim=dim, keepdim=True).clamp(min=1)
        tau = cumulative.gather(dim, support - 1) / support.to(z.dtype)
        out = torch.clamp(z - tau, min=0)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        dim = ctx.dim
        inside = out > 0
        grad = grad.masked_fill(~inside, 0)
        # On the support the Jacobian is I - 11^T / |S|: subtract the support's mean gradient.
        mean = grad.sum(dim=dim, keepdim=True) / inside.sum(dim=dim, keepdim=True).to(grad.dtype)
        return torch.where(inside, grad - mean, torch.zeros_like(grad)), None


class _Entmax15(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        z = (z - z.amax(dim=dim, keepdim=True)) / 2
        ordered, _ = torch.sort(z, dim=dim, descending=True)
        ranks = _ranks(z, dim)
        mean = ordered.cumsum(dim) / ranks
        mean_sq = (ordered * ordered).cumsum(dim) / ranks
        # For a support of the k largest: sum (x_i - tau)^2 = 1 is a quadratic in tau; its root
        # below the mean is tau_k. The support is the largest k whose tau_k is below its k-th entry.
        spread = ranks * (mean_sq - mean * mean)
        tau_k = mean - torch.sqrt(torch.clamp((1 - spread) / ranks, min=0))
        support = (tau_k <= ordered).sum(dim=dim, keepdim=True).clamp(min=1)
        tau = tau_k.gather(dim, support - 1)
        out = torch.clamp(z - tau, min=0) ** 2
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        dim = ctx.dim
        # d out / dz = diag(s) - s s^T / sum(s) with s = sqrt(out) = z/2 - tau on the support.
        root = out.sqrt()
        weighted = grad * root
        shift = weighted.sum(dim=dim, keepdim=True) / root.sum(dim=dim, keepdim=True)
        return weighted - shift * root, None


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex (sums to 1, often exact zeros)."""
    return _Sparsemax.apply(z, dim)


def entmax15(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1.5-entmax: between softmax and sparsemax, sums to 1 with exact zeros."""
    return _Entmax15.apply(z, dim)


MAPS = {"sparsemax": sparsemax, "entmax15": entmax15}
