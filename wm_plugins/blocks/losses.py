"""MSE and Huber between ``out["pred"]`` and ``out["target"]``."""

from __future__ import annotations

import torch.nn.functional as F


class MSELoss:
    """Mean squared error over batch, time and dims.

    Args:
        detach_target: stop gradients through the target (off by default: LeWM trains both ends).
    """

    def __init__(self, detach_target: bool = False):
        self.detach_target = detach_target

    def __call__(self, out, batch):
        target = out["target"].detach() if self.detach_target else out["target"]
        return F.mse_loss(out["pred"].float(), target.float())


class HuberLoss:
    """Huber (smooth L1) loss.

    Args:
        delta: where the loss turns from quadratic to linear.
        detach_target: stop gradients through the target.
    """

    def __init__(self, delta: float = 1.0, detach_target: bool = False):
        self.delta = delta
        self.detach_target = detach_target

    def __call__(self, out, batch):
        target = out["target"].detach() if self.detach_target else out["target"]
        return F.huber_loss(out["pred"].float(), target.float(), delta=self.delta)
