"""The latent action report: codebook curves, held-out scores, reconstruction grids, comparisons.

Stage ``latent_actions_report`` (after the sweep, or after ``train`` in a single run):

* plots ``plots/codebook_entropy.png``: batch codebook entropy and perplexity logged
  during training (``train/stats/entropy``, ``train/stats/perplexity``) of every run,
  solid for EMA codebooks and dashed for gradient-learned ones (the reference found
  EMA keeps entropy stable where gradients collapse it);
* scores each run's checkpoint on held-out windows (``scoring.score_run``): frame t+1
  from the inferred code and from the real actions' code, against copying frame t;
  the same near the labelled ball; whether the decoder uses its code at all; held-out
  codebook use; dead IDM dimensions; action-to-latent accuracy against the majority code;
* draws ``plots/reconstructions_<run>.png`` per run (``views.write_grid``);
* lists the pairs of runs that differ in one factor (EMA, K, IDM, decoder output,
  restarts) with their scores side by side;
* writes the table to report.md and ``results.json["latent_actions"]``.

Also usable without a run: ``python -m wm_plugins.latent_actions.report RUN_A RUN_B --out entropy.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from wm_framework.atomic import save_png
from wm_framework.contracts import config_stage
from wm_plugins.latent_actions.report_config import LatentActionsReportConfig
from wm_plugins.latent_actions.scoring import score_run
from wm_plugins.latent_actions.views import write_grid

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
    """Codebook entropy (left) and perplexity (right) against step, one line per run (solid: EMA
    codebook, dashed: gradient). ``key`` names the entropy metric; the perplexity panel reads the
    same key with ``perplexity`` for ``entropy`` (drawn as exp(entropy) where it is missing). None if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_p) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    drawn = 0
    for i, (label, run_dir) in enumerate(runs.items()):
        records = read_metrics(run_dir)
        steps, vals = metric_curve(records, key)
        if len(steps) == 0:
            continue
        is_ema = True if ema is None else ema.get(label, True)
        style = dict(color=f"C{i % 10}", linestyle="-" if is_ema else "--",
                     label=f"{label} ({'EMA' if is_ema else 'gradient'})")
        ax_h.plot(steps, vals, **style)
        p_steps, p_vals = metric_curve(records, key.replace("entropy", "perplexity"))
        if len(p_steps) == 0:
            p_steps, p_vals = steps, np.exp(vals)
        ax_p.plot(p_steps, p_vals, **style)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    for ax, what in ((ax_h, "codebook entropy (nats, per batch)"), (ax_p, "codebook perplexity (per batch)")):
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax_p.set_yscale("log")
    ax_h.legend(fontsize=7)
    fig.suptitle("Codebook use over training: EMA (solid) vs gradient (dashed) codebook updates")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    save_png(fig, out)
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


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


FACTORS = {"ema": "codebook updates", "codebook_size": "codebook size", "idm": "inverse-dynamics encoder",
           "residual": "decoder output", "dead_code_restart": "dead-code restarts"}


def _factor_defaults() -> dict:
    """The factors' defaults, read from the model factory's signature (one source of truth:
    a table copied here once said restarts were off by default when they were on)."""
    import inspect

    from wm_plugins.latent_actions.model import make_latent_action_vqvae

    params = inspect.signature(make_latent_action_vqvae).parameters
    return {k: params[k].default for k in FACTORS}


def write_report(ctx, cfg: LatentActionsReportConfig) -> None:
    """After-sweep (or after-train) report: codebook curves, held-out scores, grids, comparisons."""
    runs = list(ctx.sweep_runs) or [(ctx.label or ctx.recipe.name, ctx)]
    rows, ema, grids = {}, {}, {}
    for label, sub in runs:
        predictor = (sub.recipe.model.predictor if sub.recipe.model else {}) or {}
        row = {k: predictor.get(k, d) for k, d in _factor_defaults().items()}
        ema[label] = bool(row["ema"])
        row.update({f"train_{k}": v for k, v in final_metrics(read_metrics(sub.path)).items()})
        if sub.checkpoints():
            scores, shown = score_run(sub, cfg)
            row.update(scores)
            grid = write_grid(shown, ctx.plots_dir / f"reconstructions_{_slug(label)}.png", label)
            if grid is not None:
                grids[label] = grid
        rows[label] = row
    plot = plot_codebook_entropy({lab: sub.path for lab, sub in runs}, ctx.plots_dir / "codebook_entropy.png",
                                 cfg.entropy_key, ema)
    ctx.update_results("latent_actions", rows)
    ctx.write_report_section("latent_actions", "Latent actions", render_markdown(rows, plot, grids, ctx.path, cfg))


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in label)


make_report_stage = config_stage(LatentActionsReportConfig, write_report)


def comparisons(rows: dict[str, dict]) -> list[str]:
    """One line per pair of runs that differ in exactly one factor (EMA, K, IDM, ...): the scores side by side."""
    lines = []
    labels = list(rows)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            differ = [k for k in FACTORS if rows[a].get(k) != rows[b].get(k)]
            if len(differ) != 1:
                continue
            k = differ[0]
            ra, rb = rows[a], rows[b]
            stats = ", ".join(f"{name} {_fmt(ra.get(key))} vs {_fmt(rb.get(key))}" for key, name in (
                ("perplexity", "held-out perplexity"), ("recon_mse", "recon MSE"), ("ball_mse", "ball MSE"),
                ("code_gain", "code gain"), ("a2l_accuracy", "a2l acc")) if key in ra or key in rb)
            lines.append(f"- {FACTORS[k]}: `{a}` ({k}={ra.get(k)}) vs `{b}` ({k}={rb.get(k)}): {stats}")
    return lines


def render_markdown(rows: dict[str, dict], plot: Path | None, grids: dict[str, Path], root: Path,
                    cfg: LatentActionsReportConfig) -> str:
    cols = [("codebook_size", "K"), ("ema", "EMA"), ("idm", "IDM"), ("residual", "residual"),
            ("dead_code_restart", "restarts"), ("perplexity", "perplexity"), ("usage", "usage"),
            ("recon_mse", "recon MSE"), ("copy_last_mse", "copy-last MSE"), ("code_gain", "code gain"),
            ("ball_mse", "ball MSE"), ("ball_copy_last_mse", "ball copy-last MSE"),
            ("action_recon_mse", "action-coded MSE"), ("a2l_accuracy", "a2l acc"), ("a2l_majority", "majority code"),
            ("ze_dead_dims", "dead z_e dims")]
    box = f"{2 * cfg.ball_radius + 1}x{2 * cfg.ball_radius + 1}"
    md = (f"Held-out windows ({cfg.split}, checkpoint `{cfg.checkpoint}`). `perplexity`/`usage`: codes over all scored "
          "transitions. `recon`: frame t+1 from the code inferred from (frame t, frame t+1); `code gain`: the "
          "reconstruction error with another window's code over that with its own (1.0: the decoder ignores the "
          f"code). `ball`: the error in a {box} px square around the labelled ball (at or above copy-last: the "
          "code does not carry the ball). `action-coded`: the code predicted from the real actions; `a2l acc` "
          "against `majority code` (always answering the most frequent code).\n\n")
    md += "| run | " + " | ".join(c[1] for c in cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    for label, row in rows.items():
        md += f"| {label} | " + " | ".join(_fmt(row.get(k)) for k, _ in cols) + " |\n"
    pairs = comparisons(rows)
    if pairs:
        md += "\nRuns that differ in one factor:\n\n" + "\n".join(pairs) + "\n"
    if plot is not None:
        md += f"\n![codebook entropy and perplexity]({Path(plot).relative_to(root).as_posix()})\n"
    for label, grid in grids.items():
        md += f"\n{label}:\n\n![reconstructions {label}]({Path(grid).relative_to(root).as_posix()})\n"
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
