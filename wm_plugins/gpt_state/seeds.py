"""Seeds of one config -> one row with a spread; the rollout-error plot of a sweep.

A sweep with ``seeds = [0, 1]`` labels its runs ``cfgA_seed0``, ``cfgA_seed1``, ...;
rankings and verdicts must follow the config (the mean over its seeds), never a lucky
seed, and every compared number carries its spread (std over seeds, and min-max).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SEED_SUFFIX = re.compile(r"_seed-?\d+$")
# Row fields that describe a config rather than measure it: copied from its first seed.
CONFIG_FIELDS = ("action_representation", "state_prediction_mode", "reference_best_val_loss")


def config_label(run_label: str) -> str:
    """'cfgA_seed1' -> 'cfgA'; a label without a seed suffix is its own config."""
    return SEED_SUFFIX.sub("", run_label)


def aggregate(rows: list[dict], metrics: list[str]) -> list[dict]:
    """One row per config, in first-seen order: ``label``, ``runs`` (its run labels), ``n``, the
    config fields, and per metric its mean (``<metric>``), ``<metric>_std`` (None for one seed),
    ``<metric>_min`` and ``<metric>_max``; missing values are left out of the mean."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(config_label(r["label"]), []).append(r)
    out = []
    for label, members in groups.items():
        agg = {"label": label, "runs": [m["label"] for m in members], "n": len(members)}
        agg.update({k: members[0].get(k) for k in CONFIG_FIELDS})
        for m in metrics:
            vals = np.array([r[m] for r in members if r.get(m) is not None], dtype=float)
            agg[m] = float(vals.mean()) if len(vals) else None
            agg[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else None
            agg[f"{m}_min"] = float(vals.min()) if len(vals) else None
            agg[f"{m}_max"] = float(vals.max()) if len(vals) else None
        out.append(agg)
    return out


def fmt_spread(row: dict, metric: str, digits: int = 4) -> str:
    """'0.0123 ± 0.0011' (mean ± std over seeds), or the value alone for one seed."""
    v = row.get(metric)
    if v is None:
        return "–"
    std = row.get(f"{metric}_std")
    return f"{v:.{digits}g}" if std is None else f"{v:.{digits}g} ± {std:.2g}"


def plot_rollout_curves(rows: list[dict], configs: list[dict], path: str | Path) -> Path:
    """Rollout MSE against horizon, one line per config (mean over seeds) with a min-max band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from wm_framework.atomic import save_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    try:
        for cfg in configs:
            curves = np.array([r["rollout_curve"] for r in rows if r["label"] in cfg["runs"] and r.get("rollout_curve")])
            if not len(curves):
                continue
            steps = np.arange(1, curves.shape[1] + 1)
            name = f"{cfg['label']} ({cfg['action_representation']} action / {cfg['state_prediction_mode']} target)"
            (line,) = ax.plot(steps, curves.mean(0), label=f"{name}, n={len(curves)}")
            if len(curves) > 1:
                ax.fill_between(steps, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("horizon (steps ahead, open loop)")
        ax.set_ylabel("state MSE (common normalised units)")
        ax.set_title("ARX5 sweep: open-loop rollout error (band: min-max over seeds)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_png(fig, path)
    finally:
        plt.close(fig)
    return path
