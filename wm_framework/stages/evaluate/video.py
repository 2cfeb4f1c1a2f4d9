"""Side-by-side (ground truth | prediction) videos as MP4 and GIF.

Frames are upscaled by an integer factor with nearest-neighbour (64 px frames are
unwatchable at native size) and separated by a white bar. Dimensions are kept even
because H.264 with yuv420p needs them so; imageio would otherwise rescale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _rgb(frames: np.ndarray) -> np.ndarray:
    """[T, H, W] or [T, H, W, 1|3] uint8 -> [T, H, W, 3]."""
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames


def side_by_side(true: np.ndarray, pred: np.ndarray, scale: int = 4, gap: int = 2, marker_from: int | None = None) -> np.ndarray:
    """Two uint8 clips [T, H, W, C] -> one clip [T, H*s, (2W+gap)*s, 3] (rounded up to even sizes).

    ``marker_from``: frames from this index on get a red bar on top of the prediction
    panel, marking where the open-loop part of the rollout starts.
    """
    if true.shape[:3] != pred.shape[:3]:
        raise ValueError(f"side_by_side: clips differ in shape: {true.shape} vs {pred.shape}")
    a, b = _rgb(true), _rgb(pred)
    t, h, w, _ = a.shape
    bar = np.full((t, h, gap, 3), 255, np.uint8)
    clip = np.concatenate([a, bar, b], axis=2)
    if marker_from is not None:
        clip[marker_from:, :1, w + gap :, :] = (255, 0, 0)
    clip = clip.repeat(scale, axis=1).repeat(scale, axis=2)
    pad_h, pad_w = clip.shape[1] % 2, clip.shape[2] % 2
    if pad_h or pad_w:
        clip = np.pad(clip, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return np.ascontiguousarray(clip)


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Write uint8 RGB frames [T, H, W, 3] as H.264 MP4 (atomic: temp file + rename).

    Encoded with PyAV (its wheels bundle FFmpeg) through imageio's ``pyav`` plugin, not
    imageio-ffmpeg: procgen2 -> gym3 pins imageio-ffmpeg<0.4, which current imageio and
    setuptools no longer work with.
    """
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    try:
        iio.imwrite(tmp, np.asarray(frames, dtype=np.uint8), plugin="pyav", fps=fps, codec="libx264",
                    out_pixel_format="yuv420p")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Write uint8 RGB frames [T, H, W, 3] as a looping GIF (atomic)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.gif")
    imageio.mimsave(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def write_side_by_side(true: np.ndarray, pred: np.ndarray, stem: str | Path, fps: int = 8, scale: int | None = None,
                       marker_from: int | None = None) -> dict[str, Path]:
    """Write ``<stem>.mp4`` and ``<stem>.gif`` of ground truth | prediction; returns the paths.

    ``scale`` defaults to the integer factor that makes a frame about 128 px tall (2 for
    64-84 px frames): readable, and a 36-frame GIF stays a few hundred KB.
    """
    if scale is None:
        scale = max(1, -(-128 // max(1, int(true.shape[1]))))
    clip = side_by_side(true, pred, scale=scale, marker_from=marker_from)
    stem = Path(stem)
    return {"mp4": write_mp4(clip, stem.with_suffix(".mp4"), fps), "gif": write_gif(clip, stem.with_suffix(".gif"), fps)}
