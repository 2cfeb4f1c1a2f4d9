"""The `eval` run stage: open-loop rollouts of a trained model on held-out data.

Recipe table (validated by :class:`EvalConfig`)::

    [eval]
    horizons = [1, 5, 10, 30, 32]
    episodes = 16            # held-out windows rolled out (spread over many episodes)
    split = "test"           # the test store if the recipe has one, else the holdout/val split
    video = true
    [eval.reference]         # published figures to put next to ours (optional)
    label = "reference CoinRun next-frame CNN, 10k steps"
    mse = 0.00205
    psnr = 26.9
    ssim = 0.863
    horizon_mse = { "32" = 0.00232 }

Writes ``rollout_metrics.json``/``.csv`` into the run directory, ``plots/rollout_mse.png``,
``videos/rollout_<i>.mp4``/``.gif``, ``results.json["eval"]`` and the report's "eval" section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    split: Literal["test", "holdout", "val"] = Field(default="test", description="Held-out data to use.")
    checkpoint: str = Field(default="last", description="Checkpoint to evaluate: last, best, a label or a path.")
    context: int | None = Field(default=None, ge=1, description="Ground-truth frames given first (default: model history).")
    batch_size: int = Field(default=8, ge=1, description="Rollouts run together.")
    video: bool = Field(default=True, description="Write side-by-side MP4 + GIF clips.")
    videos: int = Field(default=2, ge=0, description="Number of clips.")
    fps: int = Field(default=8, ge=1, description="Frames per second of the clips.")
    reference: ReferenceFigures | None = Field(default=None, description="Published figures to compare against.")

    @field_validator("horizons")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("horizons must be a non-empty list of positive integers")
        return sorted(set(v))


def eval_stage(**params):
    """Open-loop rollout evaluation: MSE/PSNR/SSIM per horizon vs copy-last-frame, plot, videos."""
    cfg = EvalConfig(**params)

    def run(ctx):
        return run_eval(ctx, cfg)

    return run


def run_eval(ctx, cfg: EvalConfig):
    """Run the evaluation on a RunContext and record everything; returns the RolloutResult."""
    from wm_framework.evaluate.plots import plot_error_vs_horizon
    from wm_framework.evaluate.rollout import evaluate_rollouts, sampler_batches
    from wm_framework.evaluate.video import write_side_by_side

    model = ctx.load_model(cfg.checkpoint, device=ctx.device)
    context = cfg.context or model.history or 1
    need = context + max(cfg.horizons)
    sampler = ctx.sampler(cfg.split, length=need)
    if len(sampler) == 0:
        raise WMUsageError(f"eval: the {cfg.split} split has no episode long enough for {need} frames "
                           f"(context {context} + horizon {max(cfg.horizons)}); lower eval.horizons")
    result = evaluate_rollouts(model, sampler_batches(sampler, cfg.episodes, cfg.batch_size), cfg.horizons,
                               context=context, device=ctx.device, keep_samples=cfg.videos if cfg.video else 0)
    files = {k: str(p.relative_to(ctx.path)) for k, p in result.write(ctx.path).items()}
    ylabel = "MSE (pixels in [0,1])" if result.space == "pixels" else "latent MSE"
    plot = plot_error_vs_horizon(result.curve, ctx.plots_dir / "rollout_mse.png", ylabel=ylabel, marks=result.horizons)
    files["plot"] = str(plot.relative_to(ctx.path))
    videos = []
    if cfg.video and result.samples_true is not None:
        for i, (true, pred) in enumerate(zip(result.samples_true, result.samples_pred)):
            paths = write_side_by_side(true, pred, ctx.videos_dir / f"rollout_{i}", fps=cfg.fps, marker_from=result.context)
            videos.append({k: str(p.relative_to(ctx.path)) for k, p in paths.items()})
    summary = result.to_json()
    summary.update(checkpoint=cfg.checkpoint, split=cfg.split, files=files, videos=videos)
    if cfg.reference is not None:
        summary["reference"] = compare_with_reference(result, cfg.reference)
    ctx.update_results("eval", summary)
    ctx.write_report_section("eval", "Open-loop rollouts", render_markdown(result, cfg, files, videos))
    return result


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


def render_markdown(result, cfg: EvalConfig, files: dict, videos: list) -> str:
    """The report section: per-horizon table, baseline verdict, reference comparison, links."""
    names = result.metric_names()
    m, b = result.metrics["model"], result.metrics["copy_last"]
    head = "| horizon | " + " | ".join(f"model {n}" for n in names) + " | " + " | ".join(f"copy-last {n}" for n in names)
    head += " | beats copy-last |\n|---|" + "---|" * (2 * len(names) + 1) + "\n"
    rows = ""
    beats = result.beats_baseline()
    for h in result.horizons:
        rows += f"| {h} | " + " | ".join(_fmt(n, m[h][n]) for n in names) + " | "
        rows += " | ".join(_fmt(n, b[h][n]) for n in names) + f" | {'yes' if beats[str(h)] else 'no'} |\n"
    n_beat = sum(beats.values())
    if n_beat == len(beats):
        verdict = "The model beats the copy-last-frame baseline at every horizon."
    elif n_beat == 0:
        verdict = "The model does **not** beat the copy-last-frame baseline at any horizon."
    else:
        won = ", ".join(h for h, ok in beats.items() if ok)
        verdict = f"The model beats the copy-last-frame baseline only at horizons {won} (of {len(beats)})."
    text = (f"{result.n_rollouts} open-loop rollouts on the `{cfg.split}` split, checkpoint `{cfg.checkpoint}`, "
            f"{result.context} ground-truth context frames, then predictions fed back with the recorded actions "
            f"({'frames' if result.space == 'pixels' else 'latents'} scored).\n\n{head}{rows}\n{verdict}\n")
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
    if videos:
        text += "\nGround truth | prediction (a red bar marks the open-loop frames): " + ", ".join(
            f"[{v['mp4']}]({v['mp4']}) ([gif]({v['gif']}))" for v in videos) + "\n"
    return text


def _fmt(metric: str, v: float) -> str:
    return f"{v:.2f}" if metric == "psnr" else f"{v:.4f}" if metric == "ssim" else f"{v:.5f}"
