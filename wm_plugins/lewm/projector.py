"""The BatchNorm projector LeWM puts after the encoder and after the predictor.

``Linear(D, H) -> BatchNorm1d(H) -> GELU -> Linear(H, D)``. The BatchNorm is not a
detail: the ViT ends in a LayerNorm, and with that alone SIGReg cannot shape the
embedding distribution (REFERENCE §1). BatchNorm1d wants ``[N, C]``, so a
``[B, T, D]`` sequence is flattened to ``[B*T, D]``: in training mode the batch
statistics are shared by every frame of every window, exactly as in LeWM.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear on the last dim of any ``[..., D]`` tensor."""

    def __init__(self, dim: int, hidden: int = 2048, out_dim: int | None = None):
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.fc1 = nn.Linear(dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.fc1(x.reshape(-1, x.shape[-1]))
        h = self.fc2(self.act(self.bn(h)))
        return h.reshape(*lead, h.shape[-1])


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """nanoGPT/ViT-style init: N(0, std) linear/conv weights, zero biases, unit norms."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm running stats are not counted)."""
    return sum(p.numel() for p in module.parameters())
