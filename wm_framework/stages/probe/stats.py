"""How sure an R^2 is: a cheap bootstrap interval, resampling episodes when known.

Test rows are windows, and neighbouring windows of one episode are nearly the same
sample, so resampling rows would make an interval far too narrow. When the rows'
episodes are known they are the resampled unit (a cluster bootstrap); otherwise rows
are. Each cluster is reduced once to sufficient statistics (count, sums of y, y^2
and squared residuals), so one resample is a weighted sum, not a recomputation over
the rows: 200 resamples of 10k rows take milliseconds.
"""

from __future__ import annotations

import numpy as np

from wm_framework.stages.probe.probes import r2_score

#: Fewer episodes than this give no interval: resampling 2 or 3 episodes yields a handful
#: of distinct values, and a percentile "interval" of those can even exclude the estimate.
MIN_EPISODES = 5


def r2_interval(y_true, y_pred, groups=None, n_boot: int = 200, seed: int = 0,
                level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the dim-averaged R^2; None when it cannot be formed.

    Args:
        y_true, y_pred: [N] or [N, D].
        groups: [N] cluster id of each row (the episode); None: every row is its own cluster.
        n_boot: resamples (0: no interval).
        seed: resampling seed (intervals are deterministic).
        level: coverage of the interval.
    """
    yt = np.asarray(y_true, np.float64)
    yp = np.asarray(y_pred, np.float64)
    yt = yt[:, None] if yt.ndim == 1 else yt
    yp = yp[:, None] if yp.ndim == 1 else yp
    if n_boot < 1 or len(yt) < 2:
        return None
    ids = np.arange(len(yt)) if groups is None else np.asarray(groups).reshape(-1)
    _, cluster = np.unique(ids, return_inverse=True)
    n_clusters = int(cluster.max()) + 1
    if n_clusters < (2 if groups is None else MIN_EPISODES):
        return None
    # Centre first: sums of squares of raw pixel coordinates lose digits to cancellation.
    centred = yt - yt.mean(axis=0)
    stats = np.zeros((n_clusters, 1 + 3 * yt.shape[1]))
    np.add.at(stats[:, 0], cluster, 1.0)
    d = yt.shape[1]
    np.add.at(stats[:, 1:1 + d], cluster, centred)
    np.add.at(stats[:, 1 + d:1 + 2 * d], cluster, centred ** 2)
    np.add.at(stats[:, 1 + 2 * d:], cluster, (yt - yp) ** 2)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot).astype(np.float64)
    agg = weights @ stats  # [n_boot, 1 + 3D]
    n = agg[:, :1]
    ss_tot = agg[:, 1 + d:1 + 2 * d] - agg[:, 1:1 + d] ** 2 / n
    ss_res = agg[:, 1 + 2 * d:]
    # sklearn's convention for a constant truth: 1 if predicted exactly, else 0.
    flat = ss_tot <= 1e-12 * np.maximum(agg[:, 1 + d:1 + 2 * d], 1.0)
    r2 = np.where(flat, np.where(ss_res <= 0, 1.0, 0.0), 1.0 - ss_res / np.where(flat, 1.0, ss_tot))
    r2 = r2.mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(r2, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def score(y_true, y_pred, targets, groups=None, n_boot: int = 200, seed: int = 0) -> dict | None:
    """R^2 (mean and per dim), its 95% interval, and how many rows and episodes it rests on."""
    if len(y_true) < 2:
        return None
    r2, per_dim = r2_score(y_true, y_pred)
    ci = r2_interval(y_true, y_pred, groups, n_boot=n_boot, seed=seed)
    out = {"r2": r2, "r2_per_dim": dict(zip(targets, per_dim)), "n": int(len(y_true)),
           "ci95": list(ci) if ci is not None else None}
    if groups is not None:
        out["n_episodes"] = int(len(np.unique(groups)))
    return out
