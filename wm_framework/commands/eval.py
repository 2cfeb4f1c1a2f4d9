"""`wm eval RUN_DIR`: open-loop rollout evaluation of a finished (or running) run.

Given a sweep directory it evaluates each of its runs (or those named by ``--runs``) and
writes one comparison table into the sweep's report (``wm_framework.runs.sweep_dirs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from wm_framework.errors import WMUsageError
from wm_framework.commands import RUNS_HELP


def parse_horizons(text: str) -> list[int]:
    """"1,5,10" -> [1, 5, 10]; anything else is a one-line usage error."""
    try:
        hs = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise WMUsageError(f"--horizons: expected comma-separated integers, got '{text}'") from None
    if not hs or any(h < 1 for h in hs):
        raise WMUsageError(f"--horizons: expected positive integers, got '{text}'")
    return hs


def eval_command(run_dir: Path, horizons: str | None = None, episodes: int | None = None, checkpoint: str | None = None,
                 split: str | None = None, video: bool | None = None, data: Path | None = None,
                 test_data: Path | None = None):
    """Evaluate a run directory; the recipe's [eval] table gives defaults, arguments that are not
    None override them (a run made with `eval.episodes = 256` is re-evaluated on 256 windows).

    Returns the RolloutResult (results.json, report.md, plots/ and videos/ are updated).
    """
    from wm_framework.commands.stage import open_run, stage_config
    from wm_framework.stages.evaluate.stage import run_eval

    ctx = open_run(run_dir, data, test_data)
    given = dict(horizons=parse_horizons(horizons) if horizons is not None else None, episodes=episodes,
                 checkpoint=checkpoint, video=video, split=split)
    return run_eval(ctx, stage_config(ctx, "eval", given))


def eval_row(result) -> dict:
    """The headline numbers of one run's rollouts, for a sweep's comparison table: the model's
    first metric (MSE, or latent MSE) at every horizon, copy-last's at the longest, and at how
    many horizons the model beats copy-last."""
    key = result.metric_names()[0]
    model, baseline = result.metrics["model"], result.metrics["copy_last"]
    row = {f"{key} h={h}": model[h][key] for h in result.horizons}
    last = result.horizons[-1]
    row[f"copy-last {key} h={last}"] = baseline[last][key]
    beats = result.beats_baseline()
    row["beats copy-last"] = f"{sum(beats.values())}/{len(beats)}"
    row["rollouts"] = result.n_rollouts
    return row


def eval_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<timestamp>_<recipe>/), or a sweep's directory: every run of it."),
    runs: Optional[List[str]] = typer.Option(None, "--runs", metavar="LABELS", help=RUNS_HELP),
    horizons: Optional[str] = typer.Option(None, "--horizons", help="Comma-separated steps ahead (default: the recipe's [eval], else 1,5,10,30,32)."),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Held-out windows to roll out (default: the recipe's [eval], else 8)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="last, best, a label or a .pt path (default: the recipe's, else last)."),
    split: Optional[str] = typer.Option(None, "--split", help="test | holdout | val (default: the recipe's)."),
    video: Optional[bool] = typer.Option(None, "--video/--no-video", help="Write side-by-side MP4 + GIF clips (default: the recipe's, else yes)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's (default: the path recorded by `wm run`)."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="Held-out test store to use instead of the run's."),
):
    """Open-loop rollouts of a trained model: MSE/PSNR/SSIM per horizon vs copy-last-frame.

    Given a sweep directory: evaluates each run (or those in --runs), each run getting its own
    rollout_metrics.csv, plots and report section, and writes a comparison table (the model's
    error per horizon, copy-last's) into the sweep's report.md and results.json["sweep_eval"].
    """
    from wm_framework.runs.sweep_dirs import on_sweep

    if on_sweep("eval", "Open-loop rollouts across the sweep", run_dir, runs,
                lambda path: eval_command(path, horizons, episodes, checkpoint, split, video, data, test_data),
                eval_row, typer.echo):
        return
    result = eval_command(run_dir, horizons, episodes, checkpoint, split, video, data, test_data)
    m, b = result.metrics["model"], result.metrics["copy_last"]
    key = result.metric_names()[0]
    for h in result.horizons:
        typer.echo(f"horizon {h:>3}: model {key} {m[h][key]:.5f}   copy-last {b[h][key]:.5f}")
    typer.echo(f"results: {Path(run_dir) / 'rollout_metrics.csv'}, report: {Path(run_dir) / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Mount `wm eval` on the main app (called by wm_framework.cli)."""
    app.command("eval")(eval_cmd)
