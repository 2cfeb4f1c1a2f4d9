"""Image metrics for predicted frames: MSE, PSNR and SSIM, in torch, batched.

All functions take float frames ``[N, C, H, W]`` (or ``[C, H, W]``) in ``[0, data_range]``
and return one value per frame (``[N]``), so callers can average over frames,
horizons or episodes as they need.

SSIM follows Wang et al. (2004) as scikit-image computes it with
``gaussian_weights=True, use_sample_covariance=False``: an 11x11 Gaussian window
(sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, statistics over the
"valid" region only (no padding), averaged over pixels and channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# PSNR of a perfect prediction is infinite; clamp the MSE so averages stay finite (= 100 dB at range 1).
_MIN_MSE = 1e-10


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x.unsqueeze(0) if x.dim() == 3 else x


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame: [N]."""
    pred, target = _as_batch(pred), _as_batch(target)
    return (pred - target).pow(2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame in dB: 10 log10(range^2 / MSE)."""
    err = mse(pred, target).clamp(min=_MIN_MSE)
    return 10.0 * torch.log10(data_range**2 / err)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE, radius: int | None = None,
                    device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius int(truncate*sigma + 0.5) (scipy's gaussian_filter kernel)."""
    radius = int(truncate * sigma + 0.5) if radius is None else int(radius)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).float()


def _filter(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter on [N, C, H, W] (each channel alone)."""
    c = x.shape[1]
    k = w.numel()
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Structural similarity per frame: [N] in [-1, 1] (1 = identical).

    Frames smaller than the 11-px window use a proportionally smaller Gaussian.
    """
    pred, target = _as_batch(pred), _as_batch(target)
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    side = min(pred.shape[-2:])
    radius = int(SSIM_TRUNCATE * sigma + 0.5)
    if 2 * radius + 1 > side:  # tiny frames: shrink the window (and sigma with it) rather than fail
        sigma = sigma * ((side - 1) // 2) / radius
        radius = (side - 1) // 2
    w = gaussian_window(sigma, radius=radius, device=pred.device)
    # Double precision: the variance terms are small differences of large sums.
    x, y = pred.double(), target.double()
    w = w.double()
    mu_x, mu_y = _filter(x, w), _filter(y, w)
    var_x = _filter(x * x, w) - mu_x**2
    var_y = _filter(y * y, w) - mu_y**2
    cov = _filter(x * y, w) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()


def frame_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mse", "psnr", "ssim"} per frame for frames in [0, 1]."""
    return {"mse": mse(pred, target), "psnr": psnr(pred, target), "ssim": ssim(pred, target)}


def psnr_from_mse(value: float, data_range: float = 1.0) -> float:
    """PSNR (dB) of a given MSE; used to quote the PSNR of an averaged MSE."""
    return 10.0 * math.log10(data_range**2 / max(value, _MIN_MSE))


def validation_metrics(out: dict, model=None) -> dict[str, float]:
    """MSE / PSNR / SSIM of a teacher-forced forward for observation-predicting models.

    ``out`` is ``WorldModel.forward``'s result (``pred`` and ``target`` ``[B, T, D]``);
    ``model`` (the WorldModel, or its predictor) supplies ``next_obs`` to turn a flattened
    prediction back into frames. ``val_psnr`` is the PSNR of the mean MSE. Returns ``{}`` when the model does not predict
    observations, so a trainer can call it for every model.
    """
    predictor = getattr(model, "predictor", model)
    to_frame = getattr(predictor, "next_obs", None)
    if to_frame is None or "pred" not in out or "target" not in out:
        return {}
    with torch.no_grad():
        pred = out["pred"].detach().float().flatten(0, 1)
        target = out["target"].detach().float().flatten(0, 1)
        pf, tf = to_frame(pred).clamp(0, 1), to_frame(target)
        m = frame_metrics(pf, tf)
    val_mse = float(m["mse"].mean())
    return {"val_mse": val_mse, "val_psnr": psnr_from_mse(val_mse), "val_ssim": float(m["ssim"].mean())}
