"""Frame preprocessing shared by the encoder and the predictor's targets.

The encoder and ``make_target`` must see frames identically prepared (grayscale or
RGB, same size), otherwise the loss compares different images; both call
``preprocess_frames`` with the same ``grayscale`` and ``size``. The function is
idempotent (an already prepared frame passes through unchanged), which is what lets
open-loop rollouts feed predicted frames back into the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, the weights Atari/Procgen preprocessing has always used.
_LUMA = (0.299, 0.587, 0.114)


def frame_size(size) -> tuple[int, int]:
    """84 -> (84, 84); [64, 80] -> (64, 80)."""
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


def preprocess_frames(obs: torch.Tensor, grayscale: bool, size) -> torch.Tensor:
    """Float frames [..., C, H, W] in [0,1] -> [..., C', h, w] (C' = 1 if grayscale else C).

    ``size=None`` keeps the input size. Resizing uses bilinear interpolation with
    antialiasing when shrinking (a plain bilinear downsample aliases thin sprites).
    """
    lead = obs.shape[:-3]
    c, h, w = obs.shape[-3:]
    x = obs.reshape(-1, c, h, w)
    if grayscale and c == 3:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(1, keepdim=True)
    elif grayscale and c != 1:
        x = x.mean(1, keepdim=True)
    if size is not None:
        target = frame_size(size)
        if (h, w) != target:
            shrink = target[0] < h or target[1] < w
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=shrink)
            x = x.clamp(0.0, 1.0)
    return x.reshape(*lead, *x.shape[1:])


def conv_sizes(size: tuple[int, int], n_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 conv (kernel 4, padding 1 halves and floors)."""
    sizes = [size]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


def warp(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``frame`` [N, C, H, W] by ``flow`` [N, 2, H, W] in pixels (x, y).

    Output pixel (y, x) samples the input at (y + flow_y, x + flow_x), bilinearly; samples
    outside the frame take the nearest border pixel (a scrolling camera reveals new
    content at an edge; repeating the edge is a better guess than black).
    """
    n, _, h, w = frame.shape
    ys = torch.arange(h, dtype=frame.dtype, device=frame.device)
    xs = torch.arange(w, dtype=frame.dtype, device=frame.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    x = gx + flow[:, 0]
    y = gy + flow[:, 1]
    # grid_sample wants coordinates in [-1, 1] (align_corners=True: -1 and 1 are the centres of the edge pixels)
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)
    return F.grid_sample(frame, grid, mode="bilinear", padding_mode="border", align_corners=True)
