"""The reconstruction grid: what the latent action model makes of held-out transitions.

One row per held-out window (its last transition whose code is inferred); columns:
frame t, the true frame t+1, the reconstruction from the code inferred from
(frame t, frame t+1), the reconstruction from the code the action-to-latent model
predicts from the real actions, and the true change |t+1 - t| (brightened) so the
moving pixels (paddle, ball) can be found at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm_framework.atomic import save_png

COLUMNS = ("frame t", "frame t+1", "recon (inferred code)", "recon (code from action)", "|t+1 - t| x4")


def grid_panels(shown: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """Rows of [H, W] (gray) or [H, W, 3] images in [0, 1], in COLUMNS order."""
    def img(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, 1.0)
        return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)

    rows = []
    for i in range(len(shown["frame_t"])):
        change = np.clip(4.0 * np.abs(shown["frame_next"][i] - shown["frame_t"][i]), 0.0, 1.0)
        rows.append([img(shown["frame_t"][i]), img(shown["frame_next"][i]), img(shown["recon"][i]),
                     img(shown["from_action"][i]), img(change)])
    return rows


def write_grid(shown: dict[str, np.ndarray], out: str | Path, title: str = "") -> Path | None:
    """Draw the grid to ``out`` (PNG, atomic); None when there is nothing to show."""
    if not shown or len(shown.get("frame_t", [])) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = grid_panels(shown)
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(1.6 * len(COLUMNS), 1.6 * len(rows) + 0.4),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r][c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, out)
    plt.close(fig)
    return out
