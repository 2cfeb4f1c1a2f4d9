"""`wm probe RUN_DIR`: probe an existing run's checkpoints (after training, or again).

The recipe's ``[probe]`` table (defaults when it has none) decides tasks, probes and
baselines; the options choose checkpoints and an alternative held-out store.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def probe_command(run_dir: Path, checkpoints: list[str] | None = None, test_store: Path | None = None,
                  data: Path | None = None) -> dict:
    """Probe ``run_dir``; ``checkpoints`` overrides probe.checkpoints; ``test_store`` replaces the test set,
    ``data`` the training store the probes fit on."""
    from wm_framework.errors import WMUsageError
    from wm_framework.probe import ProbeConfig
    from wm_framework.probe_report import run_probe_stage
    from wm_framework.runs import load_run

    ctx = load_run(run_dir)
    if test_store is not None and not Path(test_store).exists():
        raise WMUsageError(f"--test-data {test_store}: no such store")
    if data is not None:
        ctx.use_stores(train=data)
    cfg = ctx.recipe.stage_config("probe")
    if cfg is None:
        cfg = ProbeConfig()
    elif not isinstance(cfg, ProbeConfig):
        cfg = ProbeConfig(**cfg)
    wanted = None
    if checkpoints:
        # Accept both repeated options and one comma-separated value.
        wanted = [c.strip() for item in checkpoints for c in item.split(",") if c.strip()]
        if wanted in (["all"], ["last"]):
            wanted = wanted[0]
    return run_probe_stage(ctx, cfg, checkpoints=wanted, test_store=test_store)


def probe_cli(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<timestamp>_<recipe>/)."),
    checkpoints: Optional[List[str]] = typer.Option(
        None, "--checkpoints", help="Checkpoint labels (repeat or comma-separate), 'all' or 'last'; default: probe.checkpoints."),
    test_store: Optional[Path] = typer.Option(None, "--test-data", "--test-store", help="Held-out store to evaluate on instead of the recipe's."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's (default: the path recorded by `wm run`)."),
):
    """Fit probes on frozen features of a run's checkpoints; writes probes.json and the report section."""
    probe_command(run_dir, checkpoints, test_store, data)
    typer.echo(f"probes: {Path(run_dir) / 'probes.json'}")


def register(app: typer.Typer) -> None:
    """Mount `wm probe` on the `wm` app."""
    app.command("probe")(probe_cli)
