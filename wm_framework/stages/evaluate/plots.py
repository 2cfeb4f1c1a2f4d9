"""Plots of rollout errors (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from wm_framework.atomic import save_png


def plot_error_vs_horizon(
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    ylabel: str = "MSE",
    title: str = "Open-loop rollout error",
    marks: Sequence[int] = (),
    log_y: bool = True,
) -> Path:
    """Line plot of error per step (1..H) for each named curve; written atomically as PNG.

    Args:
        curves: name -> errors at steps 1, 2, ..., H (e.g. "model", "copy_last").
        path: output file (.png).
        ylabel, title: axis label and title.
        marks: horizons to mark with dots (the reported ones).
        log_y: logarithmic error axis (errors span decades between step 1 and 32).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # never needs a display; keeps working inside notebooks
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        for name, ys in curves.items():
            xs = list(range(1, len(ys) + 1))
            (line,) = ax.plot(xs, ys, label=name, linestyle="--" if "copy" in name else "-")
            pts = [(h, ys[h - 1]) for h in marks if 1 <= h <= len(ys)]
            if pts:
                ax.plot(*zip(*pts), "o", color=line.get_color(), markersize=4)
        ax.set_xlabel("horizon (steps ahead, open loop)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log_y and all(v > 0 for ys in curves.values() for v in ys):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        save_png(fig, path)
    finally:
        plt.close(fig)
    return path
