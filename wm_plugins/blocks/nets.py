"""Identity and MLP encoders and an MLP predictor: small, generic, any shape.

They let the trainer, probes and rollouts be tested in seconds, and they are honest
baselines (an MLP on states is what many papers compare a transformer against).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class IdentityEncoder(nn.Module):
    """Flatten each frame: z_t = obs_t (states, or tiny images).

    Args:
        obs_shape: per-frame shape (data parameter, filled by the core).
    """

    def __init__(self, obs_shape: tuple = (1,)):
        super().__init__()
        self.out_dim = int(math.prod(obs_shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.flatten(2)


class MLPEncoder(nn.Module):
    """Per-frame MLP: flatten -> [Linear -> GELU] x depth -> Linear(latent_dim).

    Args:
        obs_shape: per-frame shape (data parameter).
        latent_dim: output width D.
        hidden: hidden width.
        depth: hidden layers.
        layernorm: end with a LayerNorm (keeps latents from drifting in scale).
    """

    def __init__(self, obs_shape: tuple = (1,), latent_dim: int = 32, hidden: int = 128, depth: int = 2, layernorm: bool = False):
        super().__init__()
        layers, width = [], int(math.prod(obs_shape))
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, latent_dim))
        if layernorm:
            layers.append(nn.LayerNorm(latent_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = latent_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(2))


class MLPPredictor(nn.Module):
    """Per-step MLP on [z_t, a_t] -> z_{t+1} (no memory beyond the current step; causal by construction).

    Args:
        latent_dim: latent width D (data parameter).
        action_dim: action block width (data parameter).
        hidden: hidden width.
        depth: hidden layers.
        residual: predict z_t + f(z_t, a_t) instead of f(z_t, a_t).
    """

    def __init__(self, latent_dim: int = 32, action_dim: int = 1, hidden: int = 128, depth: int = 2, residual: bool = True):
        super().__init__()
        layers, width = [], latent_dim + action_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, latent_dim))
        self.net = nn.Sequential(*layers)
        self.residual = residual
        self.history = 1

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([z, action.to(z.dtype)], dim=-1))
        return z + out if self.residual else out
