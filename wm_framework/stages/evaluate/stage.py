"""The `eval` run stage: open-loop rollouts of a trained model on held-out data.

Recipe table (validated by :class:`EvalConfig`)::

    [eval]
    horizons = [1, 5, 10, 30, 32]
    episodes = 16            # held-out windows rolled out (spread over many episodes)
    split = "test"           # the test store if the recipe has one, else holdout, else val (named as such)
    video = true
    [eval.reference]         # published figures to put next to ours (optional)
    label = "reference next-frame CNN, 10k steps"
    mse = 0.00205
    psnr = 26.9
    ssim = 0.863
    horizon_mse = { "32" = 0.00232 }

Writes ``rollout_metrics.json``/``.csv`` into the run directory, ``plots/rollout_mse.png``,
``videos/rollout_<i>.mp4``/``.gif``, ``results.json["eval"]`` and the report's "eval" section.

Every figure names the split it was measured on as it really is: ``split = "test"``
without a test store falls back to the holdout split, or to the validation split,
which also chose the best checkpoint; results.json and the report then say so. Every
mean comes with n and a 95% interval, and the report counts the evaluation windows
that also occur in the training split (``wm_framework.data.overlap``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wm_framework.contracts import config_stage
from wm_framework.errors import WMUsageError


class ReferenceFigures(BaseModel):
    """Published numbers to compare against (all optional)."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="reference", description="Where the figures come from.")
    mse: float | None = Field(default=None, description="One-step (validation) MSE.")
    psnr: float | None = Field(default=None, description="One-step PSNR in dB.")
    ssim: float | None = Field(default=None, description="One-step SSIM.")
    horizon_mse: dict[int, float] = Field(default_factory=dict, description="Open-loop MSE at given horizons.")


class EvalConfig(BaseModel):
    """The [eval] table of a recipe."""

    model_config = ConfigDict(extra="forbid")
    horizons: list[int] = Field(default_factory=lambda: [1, 5, 10, 30, 32], description="Steps ahead to report.")
    episodes: int = Field(default=8, ge=1, description="Held-out windows to roll out.")
    split: Literal["test", "holdout", "val"] = Field(
        default="test", description="Held-out data to use: 'test' is the test store, else the holdout split, else "
        "the val split (results name the split actually used).")
    checkpoint: str = Field(default="last", description="Checkpoint to evaluate: last, best, a label or a path.")
    context: int | None = Field(default=None, ge=1, description="Ground-truth frames given first (default: model history).")
    batch_size: int = Field(default=8, ge=1, description="Rollouts run together.")
    video: bool = Field(default=True, description="Write side-by-side MP4 + GIF clips.")
    videos: int = Field(default=2, ge=0, description="Number of clips.")
    fps: int = Field(default=8, ge=1, description="Frames per second of the clips.")
    reference: ReferenceFigures | None = Field(default=None, description="Published figures to compare against.")
    breakdown: bool = Field(default=True, description="For frame-predicting models: the error by frame region, "
                            "by scene motion (still / moving) and per pixel (plots/error_map.png).")
    regions: dict[str, list[float]] = Field(default_factory=dict, description="Named boxes of the frame for the "
                                            "error breakdown, [top, bottom, left, right] as fractions of the frame "
                                            "(e.g. where the player is); the rest of the frame is its own region.")
    overlap: bool = Field(default=True, description="Count the evaluation windows that also occur, bit for bit, in "
                          "the training split (one hash pass over both) and report it.")

    @field_validator("horizons")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("horizons must be a non-empty list of positive integers")
        return sorted(set(v))

    @field_validator("regions")
    @classmethod
    def _boxes(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        from wm_framework.stages.evaluate.breakdown import check_box

        for name, box in v.items():
            try:
                check_box(name, box)
            except WMUsageError as e:
                raise ValueError(str(e)) from None
        return v


def run_eval(ctx, cfg: EvalConfig):
    """Run the evaluation on a RunContext and record everything; returns the RolloutResult."""
    from wm_framework.stages.evaluate.breakdown import ErrorBreakdown
    from wm_framework.stages.evaluate.plots import plot_error_vs_horizon
    from wm_framework.stages.evaluate.rollout import evaluate_rollouts, sampler_batches
    from wm_framework.stages.evaluate.video import write_side_by_side

    model = ctx.load_model(cfg.checkpoint, device=ctx.device)
    context = cfg.context or model.history or 1
    need = context + max(cfg.horizons)
    split, split_note = _resolve_split(ctx, cfg.split)
    sampler = ctx.sampler(split, length=need)
    if len(sampler) == 0:
        raise WMUsageError(f"eval: the {split} split has no episode long enough for {need} frames "
                           f"(context {context} + horizon {max(cfg.horizons)}); lower eval.horizons")
    breakdown = ErrorBreakdown(cfg.horizons, cfg.regions) if cfg.breakdown else None
    result = evaluate_rollouts(model, sampler_batches(sampler, cfg.episodes, cfg.batch_size), cfg.horizons,
                               context=context, device=ctx.device, keep_samples=cfg.videos if cfg.video else 0,
                               breakdown=breakdown)
    if breakdown is not None and breakdown.n == 0:
        breakdown = None  # a latent-only model: there are no frames to break down
    if breakdown is not None:
        result.extra["breakdown"] = breakdown.to_json()
    files = {k: str(p.relative_to(ctx.path)) for k, p in result.write(ctx.path).items()}
    if breakdown is not None:
        files["error_map"] = str(breakdown.plot(ctx.plots_dir / "error_map.png").relative_to(ctx.path))
    ylabel = "MSE (pixels in [0,1])" if result.space == "pixels" else "latent MSE"
    plot = plot_error_vs_horizon(result.curve, ctx.plots_dir / "rollout_mse.png", ylabel=ylabel, marks=result.horizons)
    files["plot"] = str(plot.relative_to(ctx.path))
    videos = []
    if cfg.video and result.samples_true is not None:
        for i, (true, pred) in enumerate(zip(result.samples_true, result.samples_pred)):
            paths = write_side_by_side(true, pred, ctx.videos_dir / f"rollout_{i}", fps=cfg.fps, marker_from=result.context)
            videos.append({k: str(p.relative_to(ctx.path)) for k, p in paths.items()})
    summary = result.to_json()
    summary.update(checkpoint=cfg.checkpoint, split=split, split_requested=cfg.split, split_note=split_note,
                   files=files, videos=videos)
    overlap = _overlap(ctx, sampler, need) if cfg.overlap else None
    if overlap is not None:
        summary["overlap"] = {**overlap.to_json(), "describe": overlap.describe()}
    if cfg.reference is not None:
        summary["reference"] = compare_with_reference(result, cfg.reference)
    ctx.update_results("eval", summary)
    ctx.write_report_section("eval", "Open-loop rollouts",
                             render_markdown(result, cfg, files, videos, split_note, summary.get("overlap"), breakdown))
    return result


def _resolve_split(ctx, split: str) -> tuple[str, str]:
    """(split read, its truthful name); contexts without ``resolve_split`` read what they are asked."""
    if hasattr(ctx, "resolve_split"):
        return ctx.resolve_split(split)
    return split, f"{split} split"


def _overlap(ctx, sampler, window: int):
    """Evaluation windows that also occur in the training split (None when not measurable)."""
    if not (hasattr(sampler, "store") and hasattr(ctx, "splits") and hasattr(ctx, "stores")):
        return None
    from wm_framework.data.overlap import window_overlap  # lazy: hashing code is only needed here

    return window_overlap(ctx.stores()["train"], sampler.store, window, sampler.frameskip,
                          episodes_a=ctx.splits()["train"], episodes_b=sampler.episodes)


def compare_with_reference(result, ref: ReferenceFigures) -> dict:
    """Our figures next to the reference ones: {metric: {reference, ours, better}}."""
    out: dict = {"label": ref.label}
    if result.space != "pixels":
        return out
    h1 = result.metrics["model"].get(1)
    pairs = []
    if h1 is not None:
        pairs += [("mse@1", ref.mse, h1["mse"], "lower"), ("psnr@1", ref.psnr, h1["psnr"], "higher"),
                  ("ssim@1", ref.ssim, h1["ssim"], "higher")]
    for h, v in sorted(ref.horizon_mse.items()):
        if h in result.metrics["model"]:
            pairs.append((f"mse@{h}", v, result.metrics["model"][h]["mse"], "lower"))
    for name, theirs, ours, direction in pairs:
        if theirs is None:
            continue
        better = ours < theirs if direction == "lower" else ours > theirs
        out[name] = {"reference": theirs, "ours": ours, "better": bool(better)}
    return out


def render_markdown(result, cfg: EvalConfig, files: dict, videos: list, split_note: str | None = None,
                    overlap: dict | None = None, breakdown=None) -> str:
    """The report section: per-horizon table (mean ± 95% interval), baseline verdict, reference comparison, links."""
    names = result.metric_names()
    m, b = result.metrics["model"], result.metrics["copy_last"]
    sm, sb = result.spread.get("model", {}), result.spread.get("copy_last", {})
    head = "| horizon | " + " | ".join(f"model {n}" for n in names) + " | " + " | ".join(f"copy-last {n}" for n in names)
    head += " | beats copy-last |\n|---|" + "---|" * (2 * len(names) + 1) + "\n"
    rows = ""
    beats = result.beats_baseline()
    for h in result.horizons:
        rows += f"| {h} | " + " | ".join(_fmt_pm(n, m[h][n], sm.get(h, {}).get(n)) for n in names) + " | "
        rows += " | ".join(_fmt_pm(n, b[h][n], sb.get(h, {}).get(n)) for n in names)
        rows += f" | {'yes' if beats[str(h)] else 'no'} |\n"
    n_beat = sum(beats.values())
    if n_beat == len(beats):
        verdict = "The model beats the copy-last-frame baseline at every horizon."
    elif n_beat == 0:
        verdict = "The model does **not** beat the copy-last-frame baseline at any horizon."
    else:
        won = ", ".join(h for h, ok in beats.items() if ok)
        verdict = f"The model beats the copy-last-frame baseline only at horizons {won} (of {len(beats)})."
    where = split_note or f"{cfg.split} split"
    text = (f"n = {result.n_rollouts} open-loop rollouts on the **{where}**, checkpoint `{cfg.checkpoint}`, "
            f"{result.context} ground-truth context frames, then predictions fed back with the recorded actions "
            f"({'frames' if result.space == 'pixels' else 'latents'} scored). Each cell: mean over the rollouts "
            f"± half-width of its 95% interval (normal approximation; PSNR by the delta method).\n\n")
    if overlap is not None:
        text += f"Train/evaluation overlap: {overlap['describe']}.\n\n"
    text += f"{head}{rows}\n{verdict}\n"
    if cfg.reference is not None and result.space == "pixels":
        cmp = compare_with_reference(result, cfg.reference)
        lines = [f"\n**Against {cfg.reference.label}:**\n", "| metric | reference | ours | we beat it |", "|---|---|---|---|"]
        for k, v in cmp.items():
            if k == "label":
                continue
            metric = k.split("@")[0]
            lines.append(f"| {k} | {_fmt(metric, v['reference'])} | {_fmt(metric, v['ours'])} | {'yes' if v['better'] else 'no'} |")
        wins = [k for k, v in cmp.items() if k != "label" and v["better"]]
        total = len(cmp) - 1
        if total:
            lines.append("")
            lines.append("We beat the reference on every figure." if len(wins) == total else
                         "We do **not** beat the reference on any figure." if not wins else
                         f"We beat the reference on {', '.join(wins)} only ({len(wins)} of {total}).")
        text += "\n".join(lines) + "\n"
    text += f"\nError per horizon: ![rollout MSE]({files['plot']})  (data: `{files['csv']}`, `{files['json']}`)\n"
    if breakdown is not None:
        text += ("\n**Where the error is** (MSE, model / copy-last; `motion: moving` = the true frame differs from "
                 f"the last context frame by MSE >= {breakdown.to_json()['motion_threshold']:g}):\n\n")
        text += breakdown.markdown() + f"\nPer-pixel error: ![error map]({files['error_map']})\n"
    if videos:
        text += "\nGround truth | prediction (a red bar marks the open-loop frames): " + ", ".join(
            f"[{v['mp4']}]({v['mp4']}) ([gif]({v['gif']}))" for v in videos) + "\n"
    return text


def _fmt_pm(metric: str, v: float, spread: dict | None) -> str:
    if not spread or spread.get("ci95") is None:
        return _fmt(metric, v)
    return f"{_fmt(metric, v)} ± {_fmt(metric, spread['ci95'])}"


def _fmt(metric: str, v: float) -> str:
    return f"{v:.2f}" if metric == "psnr" else f"{v:.4f}" if metric == "ssim" else f"{v:.5f}"


eval_stage = config_stage(EvalConfig, run_eval,
                          "Open-loop rollout evaluation: MSE/PSNR/SSIM per horizon vs copy-last-frame, plot, videos.")
