"""Pixel layouts of imported observations: channel-last, channel-first or grayscale -> (H, W, C).

A store always holds pixels as (N, H, W, C) uint8. Other formats also use (C, H, W)
(the published JEPA's / stable-worldmodel's HDF5 files allow it, PyTorch code writes it) and plain
(H, W) grayscale frames. Reading (3, 32, 32) as channel-last gives 3x32 images with 32
channels that every later step accepts, so the layout is decided here, once, per source:
detected from the frame shape when only one reading makes sense, otherwise refused
with a message asking for ``--layout`` (never guessed).
"""

from __future__ import annotations

import numpy as np

from wm_framework.errors import WMUsageError

#: Layout names accepted by ``wm data import --layout``.
LAYOUTS = ("hwc", "chw", "hw")
#: Channel counts a frame can plausibly have (gray, RGB, RGBA).
CHANNELS = (1, 3, 4)


def detect_layout(frame_shape: tuple, layout: str | None = None, where: str = "observations") -> str:
    """The layout of uint8 frames of ``frame_shape`` (one frame, no batch axis).

    ``layout`` (from the user) wins when it fits the number of axes. Otherwise: two axes
    are grayscale ``hw``; three axes are ``hwc`` if only the last axis has a channel count
    (1, 3 or 4), ``chw`` if only the first has; anything else is refused.
    """
    shape = tuple(int(x) for x in frame_shape)
    if layout is not None:
        layout = layout.lower()
        if layout not in LAYOUTS:
            raise WMUsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
        if len(shape) != len(layout):
            raise WMUsageError(f"--layout {layout}: {where} have frames of shape {shape} ({len(shape)} axes)")
        return layout
    if len(shape) == 2:
        return "hw"
    if len(shape) != 3:
        raise WMUsageError(f"{where}: pixel frames must have 2 (H, W) or 3 axes, got shape {shape}")
    first, last = shape[0] in CHANNELS, shape[2] in CHANNELS
    if last and not first:
        return "hwc"
    if first and not last:
        return "chw"
    raise WMUsageError(f"{where}: frames of shape {shape} could be (H, W, C) or (C, H, W); "
                       "say which with --layout hwc or --layout chw")


def to_hwc(frames: np.ndarray, layout: str) -> np.ndarray:
    """Frames in ``layout`` (any leading batch axes) as (..., H, W, C)."""
    frames = np.asarray(frames)
    if layout == "hw":
        return frames[..., None]
    if layout == "chw":
        return np.ascontiguousarray(np.moveaxis(frames, -3, -1))
    return frames


def hwc_shape(frame_shape: tuple, layout: str) -> list[int]:
    """The (H, W, C) shape of one frame of ``frame_shape`` in ``layout``."""
    return list(to_hwc(np.empty(frame_shape, np.uint8), layout).shape)


def describe(layout: str) -> str:
    """A human name for reports: 'channel-first (C, H, W)'."""
    return {"hwc": "channel-last (H, W, C)", "chw": "channel-first (C, H, W)", "hw": "grayscale (H, W)"}[layout]
