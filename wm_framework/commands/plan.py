"""`wm plan RUN_DIR`: goal-conditioned planning with a trained run's model.

The recipe's ``[plan]`` table (defaults when it has none) is the starting point; the
options override it. Results go to ``plan.json``, ``results.json["plan"]`` and report.md.
Given a sweep directory it plans with each of its runs (or those named by ``--runs``)
and writes one comparison table into the sweep's report (``wm_framework.runs.sweep_dirs``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from wm_framework.commands import RUNS_HELP


def plan_command(run_dir: Path, **overrides) -> dict:
    """Run the planning evaluation on ``run_dir`` with ``overrides`` of PlanConfig fields (None = keep)."""
    from wm_framework.commands.stage import open_run, stage_config
    from wm_framework.stages.plan.stage import run_plan

    ctx = open_run(run_dir, overrides.pop("data", None), overrides.pop("test_data", None))
    # The planner's own options go into the [plan] table's `planner` sub-table (merged over it).
    planner = {k: overrides.pop(k, None) for k in ("samples", "iterations", "horizon", "elites")}
    planner["type"] = overrides.pop("planner", None)
    planner = {k: v for k, v in planner.items() if v is not None}
    if planner:
        overrides["planner"] = planner
    return run_plan(ctx, stage_config(ctx, "plan", overrides))


def plan_row(summary: dict) -> dict:
    """The headline numbers of one run's planning, for a sweep's comparison table."""
    seconds = summary.get("plan_seconds") or {}
    row = {"success rate": summary.get("success_rate"), "random success rate": summary.get("random_success_rate"),
           "mean steps": summary.get("mean_steps")}
    if "mean_final_error" in summary:  # reported for envs that measure a distance to the goal (goal_distance)
        row["mean final error"] = summary["mean_final_error"]
        row["random mean final error"] = summary.get("random_mean_final_error")
        row["mean start error"] = summary.get("mean_start_error")
    row.update({"plan s (median)": seconds.get("median"), "plan s (p95)": seconds.get("p95"),
                "tasks": summary.get("episodes")})
    return row


def plan_cli(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<timestamp>_<recipe>/), or a sweep's directory: every run of it."),
    runs: Optional[List[str]] = typer.Option(None, "--runs", metavar="LABELS", help=RUNS_HELP),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Start/goal tasks (default 10)."),
    k: Optional[int] = typer.Option(None, "--k", help="Raw env steps from start to goal (default horizon*frameskip)."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Raw env steps allowed per task (default 2*k)."),
    planner: Optional[str] = typer.Option(None, "--planner", help="Registered planner (default cem / cem_discrete)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="CEM samples per iteration (default 300)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="CEM iterations (default 30)."),
    elites: Optional[int] = typer.Option(None, "--elites", help="CEM elites (default 30)."),
    horizon: Optional[int] = typer.Option(None, "--horizon", help="Action blocks per plan (default 5)."),
    cost: Optional[str] = typer.Option(None, "--cost", help="latent | state | target."),
    context: Optional[int] = typer.Option(None, "--context", help="Context frames for the model (default: its history)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="last, best, a label or a path."),
    split: Optional[str] = typer.Option(None, "--split", help="test | holdout | val."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Task, planner and baseline seed."),
    no_random: bool = typer.Option(False, "--no-random", help="Skip the random-action baseline."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's (default: the path recorded by `wm run`)."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="Held-out test store to use instead of the run's."),
):
    """Plan towards goals k steps ahead in held-out episodes (CEM) and compare with random actions.

    Given a sweep directory: plans with each run (or those in --runs), each run getting its
    own plan.json and report section, and writes a comparison table (success rates, planning
    time) into the sweep's report.md and results.json["sweep_plan"].
    """
    from wm_framework.runs.sweep_dirs import on_sweep

    options = dict(episodes=episodes, k=k, budget=budget, planner=planner, samples=samples, iterations=iterations,
                   elites=elites, horizon=horizon, cost=cost, context=context, checkpoint=checkpoint, split=split,
                   seed=seed, random_baseline=False if no_random else None, data=data, test_data=test_data)
    # plan_command pops from its overrides: every run gets its own copy.
    if on_sweep("plan", "Planning across the sweep", run_dir, runs,
                lambda path: plan_command(path, **dict(options)), plan_row, typer.echo):
        return
    summary = plan_command(run_dir, **options)
    typer.echo(json.dumps({key: summary[key] for key in ("success_rate", "random_success_rate", "plan_seconds")
                           if key in summary}))
    typer.echo(f"report: {Path(run_dir) / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Mount `wm plan` on the `wm` app."""
    app.command("plan")(plan_cli)
