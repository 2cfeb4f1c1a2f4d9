"""`arx5_sweep_report`: export, fingerprint and fairly compare the ARX5 delta-sweep configs.

Runs after the sweep (``sweep.after_stages``) with ``ctx.sweep_runs = [(label, RunContext)]``.
For each config it writes ``checkpoints/<label>/params/params.pt`` (+
``normalization_stats.json``) in the parent run directory, fingerprints that folder
exactly like ``cd checkpoints/<label> && find params -type f | sort | xargs sha256sum |
sha256sum``, scores the model in the common space (compare.py) and renders one table
next to the published numbers, with the ranking each metric gives.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from wm_framework.contracts import config_stage
from wm_framework.atomic import atomic_write_bytes

# Published best val losses (each in its own target space) and the published verdict.
REFERENCE_VAL_LOSS = {"cfgA": 0.0982, "cfgB": 0.4244, "cfgC": 0.0764, "cfgD": 0.2282}
REFERENCE_WINNER = "cfgC"


class SweepReportConfig(BaseModel):
    """[arx5_sweep_report] table of a recipe."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field(default="best", description="Checkpoint of each sub-run to export and score (falls back to last).")
    split: str = Field(default="val", description="Split the common-space scores are computed on.")
    horizons: list[int] = Field(default_factory=lambda: [1, 8, 32], description="Open-loop rollout horizons.")
    rollout_context: int = Field(default=8, ge=1, description="Ground-truth steps before a rollout starts.")
    max_windows: int = Field(default=256, ge=1, description="Windows scored per config (same windows for all).")
    rank_by: str = Field(default="common_mse", description="Metric that picks the winner: common_mse, rollout_mse_h<H> or best_val_loss.")
    groups: dict[str, tuple[int, int]] = Field(default_factory=dict, description="Named state-dim ranges [first, end) "
                                               "whose common-space errors are reported apart, e.g. position and velocity.")


# -- files ----------------------------------------------------------------------------
def export_params(cfg_dir: Path, model_state_dict: dict, meta: dict, normalization_stats: dict) -> Path:
    """Write ``cfg_dir/params/params.pt`` (state dict + meta) and ``normalization_stats.json``."""
    import io

    import torch

    params = Path(cfg_dir) / "params"
    buf = io.BytesIO()
    torch.save({"model_state_dict": {k: v.detach().cpu() for k, v in model_state_dict.items()}, **meta}, buf)
    atomic_write_bytes(params / "params.pt", buf.getvalue())
    atomic_write_bytes(params / "normalization_stats.json",
                        (json.dumps(normalization_stats, indent=2, sort_keys=True) + "\n").encode())
    return params


def checkpoint_fingerprint(cfg_dir: str | Path) -> str:
    """Python equal of ``cd cfg_dir && find params -type f | sort | xargs sha256sum | sha256sum``.

    ``sort`` is taken in byte order (``LC_ALL=C``); for the plain ASCII names written
    here every locale agrees.
    """
    cfg_dir = Path(cfg_dir)
    files = sorted((p.relative_to(cfg_dir).as_posix() for p in (cfg_dir / "params").rglob("*") if p.is_file()),
                   key=lambda s: s.encode())
    listing = "".join(f"{_sha256_file(cfg_dir / rel)}  {rel}\n" for rel in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- rows, rankings, verdicts -----------------------------------------------------------
def metric_names(horizons) -> list[str]:
    return ["best_val_loss", "common_mse"] + [f"rollout_mse_h{h}" for h in horizons]


def rank(rows: list[dict], metric: str) -> list[str]:
    """Labels from best (lowest) to worst by ``metric``; missing values go last."""
    def key(r):
        v = r.get(metric)
        return (v is None or v != v, v if v is not None else 0.0)
    return [r["label"] for r in sorted(rows, key=key)]


def assign_verdicts(rows: list[dict], rank_by: str) -> None:
    """winner = best by ``rank_by``; baseline = the absolute/absolute config; the rest discard."""
    winner = rank(rows, rank_by)[0] if rows else None
    for r in rows:
        if r["label"] == winner:
            r["verdict"] = "winner"
        elif r["action_representation"] == "absolute" and r["state_prediction_mode"] == "absolute":
            r["verdict"] = "baseline"
        else:
            r["verdict"] = "discard"


def _fmt(v, digits=4):
    return "–" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))


def group_metric_names(groups, horizons) -> list[str]:
    """Per dim group: the one-step common-space MSE and the rollout MSE at the longest horizon."""
    return [m for g in groups for m in (f"common_mse_{g}", f"rollout_mse_{g}_h{max(horizons)}")]


def render_markdown(rows: list[dict], configs: list[dict], rankings: dict, horizons, rank_by: str,
                    groups=None, plot: str | None = None) -> str:
    """Config table (mean ± std over seeds), dim-group split, per-run fingerprints, rankings."""
    from wm_plugins.gpt_state.seeds import fmt_spread

    n_seeds = sorted({c["n"] for c in configs})
    hcols = [f"rollout h={h}" for h in horizons]
    head = ["config", "action input", "state target", "seeds", "best val loss (own space)", "best step",
            "final grad norm", "common-space MSE", *hcols, "verdict", "published val loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        cells = [c["label"], c["action_representation"], c["state_prediction_mode"], str(c["n"]),
                 fmt_spread(c, "best_val_loss"), fmt_spread(c, "best_step", 5), fmt_spread(c, "final_grad_norm", 3),
                 fmt_spread(c, "common_mse"), *[fmt_spread(c, f"rollout_mse_h{h}") for h in horizons],
                 f"**{c['verdict']}**", _fmt(REFERENCE_VAL_LOSS.get(c["label"]))]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\n"
    text += (f"Each cell: mean ± std over the config's seeds (n = {', '.join(map(str, n_seeds))}). Val losses are each "
             "measured in the config's own target space (normalised absolute next state or normalised delta) and are "
             "**not comparable across targets**; the common-space columns score every config on the absolute next "
             "state in the same normalised units (one-step teacher-forced, and open-loop rollouts h steps ahead). "
             "Verdicts follow the mean of `" + rank_by + "`.\n")
    if groups:
        gm = group_metric_names(groups, horizons)
        ghead = ["config", *[m.replace("_", " ") for m in gm]]
        glines = ["| " + " | ".join(ghead) + " |", "|" + "---|" * len(ghead)]
        glines += ["| " + " | ".join([c["label"], *[fmt_spread(c, m) for m in gm]]) + " |" for c in configs]
        spans = ", ".join(f"{g} = dims {a}..{b - 1}" for g, (a, b) in groups.items())
        text += f"\n**Error by state dims** ({spans}; common normalised units):\n\n" + "\n".join(glines) + "\n"
    run_lines = ["| run | best val loss | common-space MSE | fingerprint |", "|---|---|---|---|"]
    run_lines += [f"| {r['label']} | {_fmt(r['best_val_loss'])} | {_fmt(r['common_mse'])} | `{r['fingerprint']}` |"
                  for r in rows]
    text += "\n**Every run** (fingerprint: `find params -type f | sort | xargs sha256sum | sha256sum` in "
    text += "`checkpoints/<run>`):\n\n" + "\n".join(run_lines) + "\n"
    published = " < ".join(sorted(REFERENCE_VAL_LOSS, key=REFERENCE_VAL_LOSS.get))
    rank_lines = ["| metric (config means) | ranking (best first) |", "|---|---|"]
    rank_lines += [f"| {m}{' (verdict)' if m == rank_by else ''} | {' < '.join(order)} |" for m, order in rankings.items()]
    rank_lines.append(f"| published best val loss | {published} (winner {REFERENCE_WINNER}) |")
    ref = ", ".join(f"{k} {v}" + (" (winner)" if k == REFERENCE_WINNER else "") for k, v in REFERENCE_VAL_LOSS.items())
    text += "\n" + "\n".join(rank_lines) + "\n\n"
    text += f"Published best val losses (own target spaces, 500k steps): {ref}; delta-target grad norms ~4 vs ~0.04.\n"
    if plot:
        text += f"\n![rollout MSE per config]({plot})\n"
    return text


# -- the stage -------------------------------------------------------------------------
def _load(sub, checkpoint: str):
    from wm_framework.errors import WMUsageError

    try:
        return sub.load_model(checkpoint)
    except WMUsageError:
        return sub.load_model("last")


def evaluate_sweep(ctx, cfg: SweepReportConfig) -> dict:
    """Export, fingerprint and score every sub-run of ``ctx.sweep_runs``; write results + report."""
    import torch

    from wm_plugins.gpt_state.compare import score_config, windows_from_sampler
    from wm_plugins.gpt_state.seeds import aggregate, config_label, plot_rollout_curves

    runs = list(getattr(ctx, "sweep_runs", []) or [])
    if not runs:
        from wm_framework.errors import WMUsageError
        raise WMUsageError("arx5_sweep_report: no sweep runs (list it in sweep.after_stages of a recipe with [sweep])")
    length = cfg.rollout_context + max(cfg.horizons)
    rows, common_std, states = [], None, None
    for label, sub in runs:
        model = _load(sub, cfg.checkpoint)
        enc, pred = model.encoder, model.predictor
        train = sub.results().get("train", {})
        if states is None:  # identical store + split for every config: load the windows once
            states, actions = windows_from_sampler(sub.sampler(cfg.split, length=length), cfg.max_windows)
            common_std = pred.state_std.clone()  # ONE common space for all configs
        with torch.no_grad():
            scores = score_config(enc, pred, states, actions, common_std, cfg.horizons, cfg.rollout_context,
                                  groups=cfg.groups)
        meta = {"best_val_loss": train.get("best_val_loss"), "best_step": train.get("best_step"),
                "global_step": train.get("global_step"), "action_representation": pred.action_representation,
                "state_prediction_mode": pred.state_prediction_mode, "config_label": label}
        cfg_dir = ctx.path / "checkpoints" / label
        export_params(cfg_dir, model.state_dict(), meta, pred.normalization_stats())
        row = {"label": label, **meta, "final_grad_norm": train.get("final_grad_norm"),
               "common_mse": scores["common_mse"], "own_loss_on_scored_windows": scores["own_loss"],
               **{f"rollout_mse_h{h}": v for h, v in scores["rollout_mse"].items()},
               **{f"common_mse_{g}": scores[f"common_mse_{g}"] for g in cfg.groups},
               **{f"rollout_mse_{g}_h{h}": v for g in cfg.groups for h, v in scores[f"rollout_mse_{g}"].items()},
               "rollout_curve": scores["rollout_curve"],
               "fingerprint": checkpoint_fingerprint(cfg_dir),
               "reference_best_val_loss": REFERENCE_VAL_LOSS.get(config_label(label))}
        rows.append(row)
    metrics = metric_names(cfg.horizons)
    configs = aggregate(rows, metrics + ["best_step", "final_grad_norm"] + group_metric_names(cfg.groups, cfg.horizons))
    rankings = {m: rank(configs, m) for m in metrics}
    if cfg.rank_by not in rankings:
        from wm_framework.errors import WMUsageError
        raise WMUsageError(f"arx5_sweep_report.rank_by: unknown metric '{cfg.rank_by}'; metrics: {', '.join(rankings)}")
    assign_verdicts(configs, cfg.rank_by)
    verdict = {c["label"]: c["verdict"] for c in configs}
    for r in rows:
        r["verdict"] = verdict[config_label(r["label"])]
    plot = plot_rollout_curves(rows, configs, Path(ctx.path) / "plots" / "arx5_rollout_mse.png")
    result = {"rows": rows, "configs": configs, "rankings": rankings, "rank_by": cfg.rank_by, "split": cfg.split,
              "windows": int(states.shape[0]), "horizons": list(cfg.horizons),
              "reference": {"best_val_loss": REFERENCE_VAL_LOSS, "winner": REFERENCE_WINNER}}
    # Own keys: the core writes its plain "sweep" summary after the after-stages.
    ctx.update_results("arx5_sweep", result)
    ctx.write_report_section("arx5_sweep", "ARX5 delta sweep: fair comparison", render_markdown(rows, configs, rankings, cfg.horizons, cfg.rank_by, cfg.groups,
                                               str(plot.relative_to(ctx.path))))
    return result


make_sweep_report = config_stage(SweepReportConfig, evaluate_sweep,
                                 "After-sweep report: own-space and common-space comparison of the sweep's runs.")
