"""Where a frame-predicting model is wrong: error by frame region, by scene motion, and as a heat map.

A single MSE per horizon says how wrong a rollout is, not where. For models that
predict frames, the eval stage also accumulates, for the model and the copy-last-frame
baseline at every reported horizon:

* **regions**: the MSE inside named boxes of the frame (recipe data, in fractions of
  the frame: ``[top, bottom, left, right]``), and in the rest of the frame. The core
  knows no game; a recipe says where things are (a platformer's camera follows the player,
  so the player is the centre box).
* **motion**: rollouts split by how much the true scene changed since the last context
  frame (the copy-last error at that horizon): ``still`` below ``MOTION_THRESHOLD``,
  ``moving`` above. In a side-scroller "moving" means the camera scrolled.
* **heat map**: the mean squared error of every pixel, at the first and the last
  reported horizon, model and copy-last side by side (``plots/error_map.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from wm_framework.errors import WMUsageError

# Copy-last MSE (pixels in [0, 1]) under which a rollout's scene counts as still: an
# unchanged frame scores ~0, a one-pixel scroll of a textured background ~1e-2.
MOTION_THRESHOLD = 1e-3
REST = "rest of frame"


def check_box(name: str, box: Sequence[float]) -> None:
    """A region must be [top, bottom, left, right] fractions with top < bottom, left < right."""
    if len(box) != 4 or not (0 <= box[0] < box[1] <= 1 and 0 <= box[2] < box[3] <= 1):
        raise WMUsageError(f"eval.regions.{name}: give [top, bottom, left, right] as fractions of the frame "
                           f"with top < bottom and left < right in [0, 1], got {list(box)}")


def region_masks(regions: Mapping[str, Sequence[float]], height: int, width: int) -> dict[str, torch.Tensor]:
    """Named boxes in frame fractions -> boolean masks [H, W], plus the rest of the frame."""
    masks, covered = {}, torch.zeros(height, width, dtype=torch.bool)
    for name, box in regions.items():
        check_box(name, box)
        m = torch.zeros(height, width, dtype=torch.bool)
        y0, y1 = int(round(box[0] * height)), max(int(round(box[1] * height)), int(round(box[0] * height)) + 1)
        x0, x1 = int(round(box[2] * width)), max(int(round(box[3] * width)), int(round(box[2] * width)) + 1)
        m[y0:y1, x0:x1] = True
        masks[name] = m
        covered |= m
    if regions:
        masks[REST] = ~covered
    return masks


class ErrorBreakdown:
    """Accumulates region, motion and per-pixel errors of rollouts (model and copy-last)."""

    def __init__(self, horizons: Sequence[int], regions: Mapping[str, Sequence[float]] | None = None):
        self.horizons = sorted(int(h) for h in horizons)
        self.regions = dict(regions or {})
        self.masks: dict[str, torch.Tensor] | None = None
        self.sums: dict = {}  # (who, h, group) -> [sum of MSE, n]
        self.maps: dict = {}  # (who, h) -> per-pixel squared-error sum [H, W]
        self.n = 0

    def add(self, h: int, pred: torch.Tensor, true: torch.Tensor, last: torch.Tensor) -> None:
        """One reported horizon of a batch: frames [B, C, H, W] in [0, 1]."""
        if self.masks is None:
            self.masks = region_masks(self.regions, *true.shape[-2:])
        base_mse = (last - true).pow(2).flatten(1).mean(1)
        moving = base_mse >= MOTION_THRESHOLD
        for who, frame in (("model", pred), ("copy_last", last)):
            sq = (frame - true).pow(2).mean(1).double().cpu()  # [B, H, W]
            per = sq.flatten(1).mean(1)
            self._add(who, h, "motion: still", per[~moving.cpu()])
            self._add(who, h, "motion: moving", per[moving.cpu()])
            for name, mask in self.masks.items():
                self._add(who, h, f"region: {name}", sq[:, mask].mean(1))
            if h in (self.horizons[0], self.horizons[-1]):
                self.maps[(who, h)] = self.maps.get((who, h), 0) + sq.sum(0)
        if h == self.horizons[0]:
            self.n += true.shape[0]

    def _add(self, who: str, h: int, group: str, values: torch.Tensor) -> None:
        slot = self.sums.setdefault((who, h, group), [0.0, 0])
        slot[0] += float(values.sum())
        slot[1] += int(values.numel())

    def groups(self) -> list[str]:
        seen = []
        for _, _, g in self.sums:
            if g not in seen:
                seen.append(g)
        return seen

    def to_json(self) -> dict:
        """{group: {horizon: {model, copy_last, n}}} (MSE means; n rollouts in the group)."""
        out: dict = {"motion_threshold": MOTION_THRESHOLD, "regions": self.regions, "groups": {}}
        for g in self.groups():
            out["groups"][g] = {}
            for h in self.horizons:
                m, b = self.sums.get(("model", h, g), [0, 0]), self.sums.get(("copy_last", h, g), [0, 0])
                out["groups"][g][str(h)] = {"model": m[0] / m[1] if m[1] else None,
                                            "copy_last": b[0] / b[1] if b[1] else None, "n": m[1]}
        return out

    def markdown(self) -> str:
        """A table: one row per group, model / copy-last MSE per horizon (n rollouts where it is not all)."""
        data = self.to_json()["groups"]
        head = "| where | " + " | ".join(f"h={h} model / copy-last" for h in self.horizons) + " |\n"
        head += "|---|" + "---|" * len(self.horizons) + "\n"
        rows = ""
        for g, per_h in data.items():
            cells = []
            for h in self.horizons:
                c = per_h[str(h)]
                cell = "-" if c["model"] is None else f"{c['model']:.5f} / {c['copy_last']:.5f}"
                cells.append(cell + (f" (n={c['n']})" if c["n"] != self.n else ""))
            rows += f"| {g} | " + " | ".join(cells) + " |\n"
        return head + rows + f"\nn = {self.n} rollouts in all.\n"

    def plot(self, path: str | Path) -> Path:
        """Heat maps of per-pixel MSE: rows model / copy-last, columns first / last horizon (a colour scale per column)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from wm_framework.atomic import save_png

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        hs = sorted({self.horizons[0], self.horizons[-1]})
        maps = {k: (v / max(self.n, 1)).numpy() for k, v in self.maps.items()}
        # One colour scale per horizon (shared by model and copy-last): errors grow by decades
        # with the horizon, and one scale for all would paint horizon 1 black.
        vmax = {h: float(np.percentile(np.stack([maps[("model", h)], maps[("copy_last", h)]]), 99.5)) or 1e-6
                for h in hs}
        fig, axes = plt.subplots(2, len(hs), figsize=(3.2 * len(hs) + 1, 6), dpi=110, squeeze=False)
        try:
            for r, who in enumerate(("model", "copy_last")):
                for c, h in enumerate(hs):
                    im = axes[r, c].imshow(maps[(who, h)], cmap="magma", vmin=0, vmax=vmax[h])
                    axes[r, c].set_title(f"{who}, horizon {h}", fontsize=9)
                    axes[r, c].axis("off")
                    if r == 1:
                        fig.colorbar(im, ax=axes[:, c], shrink=0.8, label=f"squared error per pixel, h={h}")
            fig.suptitle(f"Where the rollout error is (n = {self.n} rollouts)", fontsize=10)
            save_png(fig, path)
        finally:
            plt.close(fig)
        return path
