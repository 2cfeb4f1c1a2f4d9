"""`wm probe RUN_DIR`: probe an existing run's checkpoints (after training, or again).

The recipe's ``[probe]`` table (defaults when it has none) decides tasks, probes and
baselines; the options choose checkpoints and an alternative held-out store. Given a
sweep directory it probes each of its runs (or those named by ``--runs``) and writes one
comparison table into the sweep's report (``wm_framework.runs.sweep_dirs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from wm_framework.commands import RUNS_HELP


def probe_command(run_dir: Path, checkpoints: list[str] | None = None, test_store: Path | None = None,
                  data: Path | None = None) -> dict:
    """Probe ``run_dir``; ``checkpoints`` overrides probe.checkpoints; ``test_store`` replaces the test set,
    ``data`` the training store the probes fit on."""
    from wm_framework.commands.stage import open_run, stage_config
    from wm_framework.errors import WMUsageError
    from wm_framework.stages.probe.study import run_probe_stage

    if test_store is not None and not Path(test_store).exists():
        raise WMUsageError(f"--test-data {test_store}: no such store")
    ctx = open_run(run_dir, data)
    cfg = stage_config(ctx, "probe")
    wanted = None
    if checkpoints:
        # Accept both repeated options and one comma-separated value.
        wanted = [c.strip() for item in checkpoints for c in item.split(",") if c.strip()]
        if wanted in (["all"], ["last"]):
            wanted = wanted[0]
    return run_probe_stage(ctx, cfg, checkpoints=wanted, test_store=test_store)


def probe_row(result: dict) -> dict:
    """The headline numbers of one run's probes, for a sweep's comparison table: the test R^2
    of every task and probe on the last probed checkpoint."""
    if not result.get("checkpoints"):
        return {"checkpoint": None}
    last = result["checkpoints"][-1]
    row: dict = {"checkpoint": last["label"]}
    for task, probes in last["tasks"].items():
        if "skipped" in probes:  # e.g. a predictor task on a model without a predictor
            row[f"{task} R²"] = None
            continue
        for probe, entry in probes.items():
            row[f"{task} {probe} R²"] = ((entry or {}).get("test") or {}).get("r2")
    return row


def probe_cli(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<timestamp>_<recipe>/), or a sweep's directory: every run of it."),
    runs: Optional[List[str]] = typer.Option(None, "--runs", metavar="LABELS", help=RUNS_HELP),
    checkpoints: Optional[List[str]] = typer.Option(
        None, "--checkpoints", help="Checkpoint labels (repeat or comma-separate), 'all' or 'last'; default: probe.checkpoints."),
    test_store: Optional[Path] = typer.Option(None, "--test-data", "--test-store", help="Held-out store to evaluate on instead of the recipe's."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's (default: the path recorded by `wm run`)."),
):
    """Fit probes on frozen features of a run's checkpoints; writes probes.json and the report section.

    Given a sweep directory: probes each run (or those in --runs), each run getting its own
    probes.json and report section, and writes a comparison table (test R^2 per task on the
    last probed checkpoint) into the sweep's report.md and results.json["sweep_probe"].
    """
    from wm_framework.runs.sweep_dirs import on_sweep

    if on_sweep("probe", "Probes across the sweep", run_dir, runs,
                lambda path: probe_command(path, checkpoints, test_store, data), probe_row, typer.echo):
        return
    probe_command(run_dir, checkpoints, test_store, data)
    typer.echo(f"probes: {Path(run_dir) / 'probes.json'}")


def register(app: typer.Typer) -> None:
    """Mount `wm probe` on the `wm` app."""
    app.command("probe")(probe_cli)
