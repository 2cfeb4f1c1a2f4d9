"""The latent action report: codebook entropy over training, ball reconstruction, sweep comparison.

Stage ``latent_actions_report`` (after the sweep, or after ``train`` in a single run):

* plots ``plots/codebook_entropy.png``: the batch codebook entropy logged during
  training (``train/stats/entropy``) of every run, solid for EMA codebooks and dashed
  for gradient-learned ones -- the reference found EMA keeps it stable where
  gradients collapse it;
* scores each run's model on held-out windows: reconstruction MSE of frame t+1 with
  the inferred code, the same restricted to a square around the labelled ball
  position (the ball is a pixel or two: a codebook too small to carry its motion
  makes it vanish, which the full-frame MSE hardly notices), and both against the
  copy-last-frame baseline; plus the reconstruction when the code comes from the real
  action (action-to-latent) and that classifier's accuracy;
* writes the table to report.md and ``results.json["latent_actions"]``.

Also usable without a run: ``python -m wm_plugins.latent_actions.report RUN_A RUN_B --out entropy.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from wm_framework.contracts import config_stage
from wm_plugins.latent_actions.report_config import LatentActionsReportConfig

FINAL_KEYS = ("recon_mse", "recon_psnr", "perplexity", "usage", "entropy", "a2l_accuracy", "action_recon_mse")


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl -> list of records (a missing file gives [])."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def metric_curve(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric over training, skipping records without it (or with null)."""
    pts = [(r["step"], r[key]) for r in records if r.get(key) is not None and "step" in r]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, vals = zip(*pts)
    return np.asarray(steps, float), np.asarray(vals, float)


def plot_codebook_entropy(runs: dict[str, str | Path], out: str | Path, key: str = "train/stats/entropy",
                          ema: dict[str, bool] | None = None) -> Path | None:
    """One line per run of ``key`` against step (solid: EMA codebook, dashed: gradient). None if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = 0
    for label, run_dir in runs.items():
        steps, vals = metric_curve(read_metrics(run_dir), key)
        if len(steps) == 0:
            continue
        is_ema = True if ema is None else ema.get(label, True)
        ax.plot(steps, vals, "-" if is_ema else "--", label=f"{label} ({'EMA' if is_ema else 'gradient'})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("codebook entropy (nats, per batch)")
    ax.set_title("Codebook entropy over training: EMA vs gradient updates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def final_metrics(records: list[dict]) -> dict[str, float]:
    """The last validation value (else training value) of each FINAL_KEYS metric."""
    out: dict[str, float] = {}
    for name in FINAL_KEYS:
        for prefix in ("val/", "train/"):
            vals = [v for r in records for k, v in r.items() if k.startswith(prefix) and k.endswith("/" + name)
                    and v is not None]
            if vals:
                out[name] = float(vals[-1])
                break
    return out


def ball_box_error(pred: np.ndarray, target: np.ndarray, bx: np.ndarray, by: np.ndarray, radius: int) -> np.ndarray:
    """Mean squared error in a (2r+1)^2 box around (bx, by) per frame; NaN where the ball position is NaN.

    pred/target [N, C, H, W]; bx/by [N] in frame pixels.
    """
    n, _, h, w = pred.shape
    out = np.full(n, np.nan)
    for i in range(n):
        if not (math.isfinite(bx[i]) and math.isfinite(by[i])):
            continue
        cx, cy = int(round(bx[i])), int(round(by[i]))
        x0, x1 = max(0, cx - radius), min(w, cx + radius + 1)
        y0, y1 = max(0, cy - radius), min(h, cy + radius + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        out[i] = float(((pred[i, :, y0:y1, x0:x1] - target[i, :, y0:y1, x0:x1]) ** 2).mean())
    return out


def score_reconstruction(ctx, cfg: LatentActionsReportConfig) -> dict[str, float]:
    """Held-out reconstruction of one run's model: full frame and near the ball, vs copy-last-frame."""
    import torch

    from wm_plugins.latent_actions.model import split_prediction

    model = ctx.load_model(cfg.checkpoint)
    sampler = ctx.sampler(cfg.split)
    if len(sampler) == 0:
        return {}
    labels = set(sampler.label_names)
    has_ball = cfg.ball_x in labels and cfg.ball_y in labels
    idx = np.unique(np.linspace(0, len(sampler) - 1, min(cfg.windows, len(sampler))).astype(np.int64))
    c, h, w = model.predictor.frame_shape
    stored_h, stored_w = sampler.store.obs_shape[:2]
    sx, sy = w / stored_w, h / stored_h  # labels are in stored-frame pixels
    acc: dict[str, list] = {k: [] for k in ("model", "copy", "ball_model", "ball_copy", "action", "action_copy")}
    with torch.no_grad():
        for chunk in np.array_split(idx, max(1, math.ceil(len(idx) / cfg.batch_size))):
            np_batch = sampler.get(chunk)
            batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in np_batch.items()
                     if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
            out = model(batch)
            frames, ex = split_prediction(out["pred"])
            target, prev = out["target"].float(), out["z"][:, :-1].float()
            inferred = (ex["from_action"] < 0.5).numpy()
            err = (frames - target).pow(2).mean(-1).numpy()
            copy_err = (prev - target).pow(2).mean(-1).numpy()
            acc["model"].append(err[inferred])
            acc["copy"].append(copy_err[inferred])
            acc["action"].append(err[~inferred])
            acc["action_copy"].append(copy_err[~inferred])
            if has_ball:
                b, t = frames.shape[:2]
                bx = np_batch[f"labels/{cfg.ball_x}"][:, 1:] * sx + (sx - 1) / 2  # pixel-centre convention
                by = np_batch[f"labels/{cfg.ball_y}"][:, 1:] * sy + (sy - 1) / 2
                as_img = lambda x: x.reshape(b * t, c, h, w).numpy()  # noqa: E731
                bm = ball_box_error(as_img(frames), as_img(target), bx.reshape(-1), by.reshape(-1), cfg.ball_radius)
                bc = ball_box_error(as_img(prev), as_img(target), bx.reshape(-1), by.reshape(-1), cfg.ball_radius)
                keep = inferred.reshape(-1)
                acc["ball_model"].append(bm[keep])
                acc["ball_copy"].append(bc[keep])
    res = {}
    names = {"model": "recon_mse", "copy": "copy_last_mse", "ball_model": "ball_mse", "ball_copy": "ball_copy_last_mse",
             "action": "action_recon_mse", "action_copy": "action_copy_last_mse"}
    for k, name in names.items():
        vals = np.concatenate(acc[k]) if acc[k] else np.zeros(0)
        vals = vals[np.isfinite(vals)]
        if len(vals):
            res[name] = float(vals.mean())
    if "ball_mse" in res:
        res["ball_frames"] = int(np.isfinite(np.concatenate(acc["ball_model"])).sum())
    return res


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(ctx, cfg: LatentActionsReportConfig) -> None:
    """After-sweep (or after-train) report: entropy plot, ball reconstruction, comparison table."""
    runs = list(ctx.sweep_runs) or [(ctx.label or ctx.recipe.name, ctx)]
    rows, ema = {}, {}
    for label, sub in runs:
        predictor = (sub.recipe.model.predictor if sub.recipe.model else {}) or {}
        ema[label] = bool(predictor.get("ema", True))
        row = {"codebook_size": predictor.get("codebook_size", 256), "ema": ema[label],
               "idm": predictor.get("idm", "cross_attention")}
        row.update({f"train_{k}": v for k, v in final_metrics(read_metrics(sub.path)).items()})
        if sub.checkpoints():
            row.update(score_reconstruction(sub, cfg))
        rows[label] = row
    plot = plot_codebook_entropy({lab: sub.path for lab, sub in runs}, ctx.plots_dir / "codebook_entropy.png",
                                 cfg.entropy_key, ema)
    ctx.update_results("latent_actions", rows)
    ctx.write_report_section("latent_actions", "Latent actions", render_markdown(rows, plot, ctx.path, cfg))


make_report_stage = config_stage(LatentActionsReportConfig, write_report)


def render_markdown(rows: dict[str, dict], plot: Path | None, root: Path, cfg: LatentActionsReportConfig) -> str:
    cols = [("codebook_size", "K"), ("ema", "EMA"), ("train_perplexity", "perplexity"), ("train_usage", "usage"),
            ("recon_mse", "recon MSE"), ("copy_last_mse", "copy-last MSE"), ("ball_mse", "ball MSE"),
            ("ball_copy_last_mse", "ball copy-last MSE"), ("action_recon_mse", "action-coded MSE"),
            ("train_a2l_accuracy", "a2l acc")]
    md = ("Reconstruction of frame t+1 on held-out windows (" + cfg.split + "): `recon` uses the code inferred "
          "from (frame t, frame t+1); `ball` restricts the error to a " f"{2 * cfg.ball_radius + 1}x{2 * cfg.ball_radius + 1}"
          " px square around the labelled ball; `action-coded` uses the action-to-latent code. A ball MSE at or "
          "above copy-last means the ball's motion is not carried by the code (it vanishes or stays put).\n\n")
    md += "| run | " + " | ".join(c[1] for c in cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    for label, row in rows.items():
        md += f"| {label} | " + " | ".join(_fmt(row.get(k)) for k, _ in cols) + " |\n"
    if plot is not None:
        md += f"\n![codebook entropy]({Path(plot).relative_to(root).as_posix()})\n"
    return md


def main(argv: list[str] | None = None) -> None:
    """Plot codebook entropy of run directories: RUN [RUN ...] --out FILE [--key KEY]."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="codebook_entropy.png")
    ap.add_argument("--key", default="train/stats/entropy")
    args = ap.parse_args(argv)
    import tomllib

    ema = {}
    for r in args.runs:
        resolved = Path(r) / "recipe.resolved.toml"
        predictor = tomllib.loads(resolved.read_text()).get("model", {}).get("predictor", {}) if resolved.is_file() else {}
        ema[Path(r).name] = bool(predictor.get("ema", True))
    path = plot_codebook_entropy({Path(r).name: r for r in args.runs}, args.out, args.key, ema)
    print(path or "no data")


if __name__ == "__main__":
    main()
