"""RMSNorm (Zhang & Sennrich, 2019): scale each vector by the inverse of its root-mean-square.

Unlike LayerNorm there is no mean subtraction and no bias: y = x / sqrt(mean(x^2) + eps) * weight.
Mistral computes the statistics in float32 whatever the model's dtype, then casts back.
"""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS-normalise the last dimension of ``x`` (any shape [..., dim]) and scale by ``weight`` [dim].

    The reduction runs in float32; the result has ``x``'s dtype.
    """
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # (..., dim), float32
    return normed.type_as(x) * weight


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-channel gain (initialised to ones), no bias."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
