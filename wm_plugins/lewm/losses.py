"""The two loss terms of LeWM: ``L = latent_mse + sigreg`` (lambda folded into sigreg).

Each is a callable ``(out, batch) -> scalar Tensor`` as the core's trainer expects.
``latent_mse`` is the JEPA prediction loss: the predictor's output against the next
frame's embedding. The target is *not* detached: LeWM trains encoder and predictor end
to end through both sides, and SIGReg (not a stop-gradient or an EMA teacher) is what
prevents the trivial constant solution.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from wm_plugins.lewm.sigreg import random_directions, sigreg_statistic


def latent_mse(out: dict, batch: dict | None = None) -> torch.Tensor:
    """Mean squared error between ``out["pred"]`` and ``out["target"]`` over batch, time and dims."""
    pred, target = out["pred"], out["target"]
    if pred.shape != target.shape:
        raise ValueError(f"latent_mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return F.mse_loss(pred.float(), target.float())


class SIGRegLoss:
    """``lam * SIGReg(out["z"])`` with ``z [B, T, D]``; each time step is scored separately.

    SIGReg is a statistic of the batch, so under DDP it must see the global batch: the
    trainer passes an all-gather that keeps gradients as ``out["gather"]``
    (``callable(z [B, T, D]) -> [B_global, T, D]``, concatenated on dim 0) in training
    steps. ``gather`` here is the same for Python users outside the trainer; with
    neither (single process, validation) the local batch is used.
    """

    def __init__(self, num_directions: int = 1024, num_knots: int = 17, t_max: float = 3.0, lam: float = 0.09,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.num_directions = num_directions
        self.num_knots = num_knots
        self.t_max = t_max
        self.lam = lam
        self.gather = gather

    def statistic(self, z: torch.Tensor, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Un-weighted SIGReg of ``z [B, T, D]`` (mean over directions and time steps), over the
        batch ``gather`` (or the constructor's) returns: the global one under DDP."""
        gather = gather or self.gather
        if gather is not None:
            z = gather(z)
        # cos/sin of bf16 projections are too coarse for a difference of near-equal numbers.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float().transpose(0, 1)  # [T, B, D]: one batch per time step
            directions = random_directions(z.shape[-1], self.num_directions, device=z.device)
            knots = torch.linspace(0.0, self.t_max, self.num_knots, device=z.device)
            return sigreg_statistic(z, directions, knots).mean()

    def __call__(self, out: dict, batch: dict | None = None) -> torch.Tensor:
        return self.lam * self.statistic(out["z"], out.get("gather"))

    def __repr__(self) -> str:
        return (f"SIGRegLoss(num_directions={self.num_directions}, num_knots={self.num_knots}, "
                f"t_max={self.t_max}, lam={self.lam})")
