"""SIGReg: push the embedding distribution towards an isotropic standard Gaussian.

LeWM (following LeJEPA) avoids collapse without stop-gradients or EMA targets by one
regulariser. Along M random unit directions u, the 1-D projections h = Z u of the
batch are compared with N(0, 1) through their characteristic functions (Epps-Pulley):

    err(t) = (mean_i cos(t h_i) - exp(-t^2/2))^2 + (mean_i sin(t h_i))^2
    stat   = N * integral_{-t_max}^{t_max} err(t) exp(-t^2/2) dt

The integrand is even, so it is evaluated on K knots in [0, t_max] with trapezoid
weights doubled. ``stat`` is averaged over the directions and over time steps (each
frame of the window is its own batch of N embeddings). For N standard-normal samples
its expectation is ~1 whatever N is; a collapsed batch scores ~N.

This follows the released LeWM code (REFERENCE §1): directions are fresh Gaussian
vectors normalised to unit length each call, drawn from the global torch RNG (so the
run's seed controls them), and the projections are not centred (a shifted batch is
penalised too).
"""

from __future__ import annotations

import torch


def trapezoid_weights(knots: torch.Tensor) -> torch.Tensor:
    """Trapezoid weights on increasing ``knots`` starting at 0, doubled for the mirrored half."""
    dt = knots[1:] - knots[:-1]
    w = torch.zeros_like(knots)
    w[:-1] += dt / 2
    w[1:] += dt / 2
    return 2 * w


def sigreg_statistic(z: torch.Tensor, directions: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Epps-Pulley statistic of ``z [..., N, D]`` along ``directions [D, M]``, averaged over M.

    ``knots [K]``: increasing points in [0, t_max], the first one 0. Returns a tensor of
    the leading shape ``[...]`` (a scalar for a 2-D ``z``). Differentiable in ``z``.
    """
    n = z.shape[-2]
    gauss_cf = torch.exp(-knots.square() / 2)  # the characteristic function of N(0, 1)
    x = (z @ directions).unsqueeze(-1) * knots  # [..., N, M, K]
    err = (x.cos().mean(dim=-3) - gauss_cf).square() + x.sin().mean(dim=-3).square()  # [..., M, K]
    per_direction = (err @ (trapezoid_weights(knots) * gauss_cf)) * n  # [..., M]
    return per_direction.mean(dim=-1)


def random_directions(dim: int, num: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[dim, num]`` Gaussian directions, each column scaled to unit length (global RNG)."""
    a = torch.randn(dim, num, device=device, dtype=dtype)
    return a / a.norm(p=2, dim=0, keepdim=True)
