"""Two facts about a Breakout store that decide what an encoder can learn from it.

    python tools/breakout_data_check.py STORE [--frames 400]

1. **Is the ball still visible after the encoder's resize?** For frames with the ball
   in play, the ball's peak brightness above the background (0..1), measured at its
   labelled position after each preprocessing a ViT recipe can choose (the resize the
   LeWM encoder does on the fly: antialiased bilinear, area or max filter, with or
   without the play-field crop). 1.0 = the ball keeps its full contrast.
2. **Does the data mix move the paddle?** Per policy: the share of steps in which the
   paddle moves, and the spread of its position, from the store's labels.

The store must hold native 210x160 frames (collect with `obs_size` unset) and the
Breakout labels. Prints markdown tables (docs/results/lewm_breakout.md quotes them).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from wm_framework.data.store import EpisodeStore
from wm_plugins.lewm.vit import resize_frames

FIELD = (32, 196, 8, 152)  # top, bottom, left, right: the play field inside the walls
SETTINGS = [  # name, crop, output size, filter
    ("224x224 bilinear (reference)", None, (224, 224), "bilinear"),
    ("64x64 bilinear (smoke / CPU-medium)", None, (64, 64), "bilinear"),
    ("64x64 area", None, (64, 64), "area"),
    ("64x64 max", None, (64, 64), "max"),
    ("field crop, 80x72 bilinear", FIELD, (80, 72), "bilinear"),
    ("field crop, 80x72 max", FIELD, (80, 72), "max"),
    ("field crop, 64x64 max", FIELD, (64, 64), "max"),
]


def ball_contrast(store: EpisodeStore, n: int, seed: int = 0) -> list[tuple[str, float, float]]:
    x = store.read("labels/ball_x", 0, store.num_frames)
    y = store.read("labels/ball_y", 0, store.num_frames)
    vis = store.read("labels/ball_visible", 0, store.num_frames)
    rows = np.flatnonzero((vis > 0.5) & np.isfinite(x) & np.isfinite(y))
    rows = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False))
    frames = torch.from_numpy(np.stack([store.read("obs", int(r), int(r) + 1)[0] for r in rows])).float() / 255.0
    frames = frames.permute(0, 3, 1, 2).mean(dim=1, keepdim=True)  # grey [N, 1, 210, 160]
    ref_peak = _peaks(frames, x[rows], y[rows], (210, 160), None)
    out = []
    for name, crop, size, mode in SETTINGS:
        img = frames if crop is None else frames[..., crop[0]:crop[1], crop[2]:crop[3]]
        small = resize_frames(img, size, mode)
        peak = _peaks(small, x[rows], y[rows], img.shape[-2:], crop) / np.maximum(ref_peak, 1e-6)
        out.append((name, float(np.median(peak)), float(np.percentile(peak, 10))))
    return out


def _peaks(img: torch.Tensor, bx: np.ndarray, by: np.ndarray, src_hw, crop) -> np.ndarray:
    """Brightest pixel in a 3x3 neighbourhood of the ball's mapped centre, minus the
    median of a 9x9 neighbourhood (the local background)."""
    h, w = img.shape[-2:]
    top, left = (crop[0], crop[2]) if crop else (0, 0)
    cy = ((by - top + 0.5) * h / src_hw[0] - 0.5).round().astype(int)
    cx = ((bx - left + 0.5) * w / src_hw[1] - 0.5).round().astype(int)
    out = np.zeros(len(bx))
    for i, (r, c) in enumerate(zip(cy, cx)):
        near = img[i, 0, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
        ring = img[i, 0, max(r - 4, 0):r + 5, max(c - 4, 0):c + 5]
        out[i] = float(near.max() - ring.median()) if near.numel() else 0.0
    return out


def paddle_motion(store: EpisodeStore) -> list[tuple[str, int, float, float]]:
    px = store.read("labels/paddle_x", 0, store.num_frames)
    out = []
    for policy in store.policies():
        moves, spreads, steps = [], [], 0
        for e in np.flatnonzero(store.episode_policy == policy):
            p = px[store.episode_starts[e]:store.episode_ends[e]]
            moves.append(np.abs(np.diff(p)) > 0)
            spreads.append(np.nanstd(p))
            steps += len(p)
        out.append((str(policy), steps, float(np.concatenate(moves).mean()), float(np.mean(spreads))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--frames", type=int, default=400, help="frames with the ball in play to measure")
    args = ap.parse_args()
    store = EpisodeStore.open(args.store)
    if tuple(store.obs_shape[:2]) != (210, 160):
        raise SystemExit(f"{args.store}: needs native 210x160 frames, has {store.obs_shape}")
    print("| preprocessing | ball contrast kept (median) | 10th percentile |\n|---|---|---|")
    for name, med, p10 in ball_contrast(store, args.frames):
        print(f"| {name} | {med:.2f} | {p10:.2f} |")
    print("\n| policy | steps | steps with paddle motion | paddle x spread (px, mean per episode) |\n|---|---|---|---|")
    for policy, steps, moving, spread in paddle_motion(store):
        print(f"| {policy} | {steps:,} | {moving:.0%} | {spread:.1f} |")


if __name__ == "__main__":
    main()
