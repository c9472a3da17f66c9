"""Per-feature standardisation, stored with the model it belongs to."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """``(x - mean) / std`` with statistics fitted on data; saved in the state dict."""

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    def fit(self, data: Tensor) -> None:
        """Set the statistics from ``data: [N, size]``."""
        self.mean.copy_(data.mean(0))
        self.std.copy_(data.std(0, unbiased=False).clamp_min(self.eps))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean
