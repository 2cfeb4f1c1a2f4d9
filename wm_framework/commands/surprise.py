"""`wm surprise RUN_DIR` (violation of expectation) and `wm straightness RUN_DIR`.

The recipe's ``[surprise]`` / ``[straightness]`` tables are the defaults; options override.
Given a sweep directory each command acts on each of its runs (or those named by ``--runs``)
and writes one comparison table into the sweep's report (``wm_framework.runs.sweep_dirs``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from wm_framework.commands import RUNS_HELP

SWEEP_DIR_HELP = "Run directory, or a sweep's directory: every run of it."


def surprise_command(run_dir: Path, **overrides) -> dict:
    from wm_framework.commands.stage import open_run, stage_config
    from wm_framework.stages.physics.stage import run_surprise

    ctx = open_run(run_dir, overrides.pop("data", None), overrides.pop("test_data", None))
    return run_surprise(ctx, stage_config(ctx, "surprise", overrides))


def straightness_command(run_dir: Path, **overrides) -> list:
    from wm_framework.commands.stage import open_run, stage_config
    from wm_framework.stages.physics.stage import run_straightness

    ctx = open_run(run_dir, overrides.pop("data", None), overrides.pop("test_data", None))
    return run_straightness(ctx, stage_config(ctx, "straightness", overrides))


def surprise_row(result: dict) -> dict:
    """The headline numbers of one run's surprise test, for a sweep's comparison table: per
    perturbation, the surprise ratio at the perturbation and its paired p-value."""
    row: dict = {}
    for kind in ("physical", "visual"):
        if kind in result:
            row[f"{kind} ratio"] = result[kind]["ratio_at_perturbation"]
            row[f"{kind} ratio vs other steps"] = result[kind]["ratio_vs_other_steps"]
            row[f"{kind} p-value"] = result[kind]["p_value"]
    row["tasks"] = result.get("episodes")
    return row


def straightness_row(rows: list) -> dict:
    """The headline numbers of one run's straightness, for a sweep's comparison table: the
    first and the last checkpoint (the change over training)."""
    first, last = rows[0], rows[-1]
    return {"first checkpoint": f"{first['label']} (step {first['step']})", "straightness (first)": first["straightness"],
            "last checkpoint": f"{last['label']} (step {last['step']})", "straightness (last)": last["straightness"]}


def surprise_cli(
    run_dir: Path = typer.Argument(..., help=SWEEP_DIR_HELP),
    runs: Optional[List[str]] = typer.Option(None, "--runs", metavar="LABELS", help=RUNS_HELP),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Tasks per perturbation (default 8)."),
    length: Optional[int] = typer.Option(None, "--length", help="Frames per sequence (default 12)."),
    perturb_at: Optional[int] = typer.Option(None, "--perturb-at", help="First perturbed frame (default length//2)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="last, best, a label or a path."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's (default: the path recorded by `wm run`)."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="Held-out test store to use instead of the run's."),
):
    """Surprise (next-latent error) at a teleport and at a recolouring vs unperturbed replays.

    Given a sweep directory: measures each run (or those in --runs), each run getting its own
    surprise.json, plot and report section, and writes a comparison table (surprise ratios,
    p-values) into the sweep's report.md and results.json["sweep_surprise"].
    """
    from wm_framework.runs.sweep_dirs import on_sweep

    options = dict(episodes=episodes, length=length, perturb_at=perturb_at, checkpoint=checkpoint, seed=seed,
                   data=data, test_data=test_data)
    # the command pops from its overrides: every run gets its own copy.
    if on_sweep("surprise", "Surprise across the sweep", run_dir, runs,
                lambda path: surprise_command(path, **dict(options)), surprise_row, typer.echo):
        return
    r = surprise_command(run_dir, **options)
    typer.echo(json.dumps({k: r[k] for k in ("physical", "visual") if k in r}, indent=1))
    typer.echo(f"report: {Path(run_dir) / 'report.md'}")


def straightness_cli(
    run_dir: Path = typer.Argument(..., help=SWEEP_DIR_HELP),
    runs: Optional[List[str]] = typer.Option(None, "--runs", metavar="LABELS", help=RUNS_HELP),
    windows: Optional[int] = typer.Option(None, "--windows", help="Held-out windows per checkpoint (default 64)."),
    length: Optional[int] = typer.Option(None, "--length", help="Frames per window (default 16)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's (default: the path recorded by `wm run`)."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="Held-out test store to use instead of the run's."),
):
    """Temporal straightness (cosine of consecutive latent velocities) of every checkpoint.

    Given a sweep directory: measures each run (or those in --runs), each run getting its own
    results, plot and report section, and writes a comparison table (straightness of the first
    and last checkpoint) into the sweep's report.md and results.json["sweep_straightness"].
    """
    from wm_framework.runs.sweep_dirs import on_sweep

    options = dict(windows=windows, length=length, data=data, test_data=test_data)
    if on_sweep("straightness", "Temporal straightness across the sweep", run_dir, runs,
                lambda path: straightness_command(path, **dict(options)), straightness_row, typer.echo):
        return
    rows = straightness_command(run_dir, **options)
    for r in rows:
        typer.echo(f"{r['label']:>12} step {r['step']:>7}  straightness {r['straightness']:.4f}")


def register(app: typer.Typer) -> None:
    """Mount `wm surprise` and `wm straightness` on the `wm` app."""
    app.command("surprise")(surprise_cli)
    app.command("straightness")(straightness_cli)
