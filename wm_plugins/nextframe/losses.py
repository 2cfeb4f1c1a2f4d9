"""Pixel reconstruction losses for observation-predicting models (pred/target in [0,1])."""

from __future__ import annotations


class PixelHuber:
    """Huber loss between predicted and true frames (quadratic below delta, linear above)."""

    def __init__(self, delta: float = 1.0):
        self.delta = float(delta)

    def __call__(self, out, batch):
        import torch.nn.functional as F

        return F.huber_loss(out["pred"].float(), out["target"].float(), delta=self.delta)


class PixelMSE:
    """Mean squared error between predicted and true frames."""

    def __call__(self, out, batch):
        import torch.nn.functional as F

        return F.mse_loss(out["pred"].float(), out["target"].float())


def make_pixel_huber(delta: float = 1.0) -> PixelHuber:
    """Huber loss on pixels (the reference default).

    Args:
        delta: switch point from quadratic to linear; with frames in [0,1] and delta=1 the
            loss is exactly half the MSE.
    """
    return PixelHuber(delta)


def make_pixel_mse() -> PixelMSE:
    """Mean squared error on pixels."""
    return PixelMSE()
