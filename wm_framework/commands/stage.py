"""`wm stage NAME RUN_DIR`: run any registered stage on a finished run, the generic way.

The stage's recipe table (``[NAME]``) gives the defaults and ``--set key=value`` (TOML
values, dotted keys for nested tables) overrides them; the stage's registered config
validates the result. A plugin's stage is reachable this way with no command of its own;
`wm probe`, `wm eval`, `wm plan` and `wm surprise` are the same with named options. Given
a sweep directory it runs the stage on each of its runs (or those in ``--runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from wm_framework.commands import RUNS_HELP
from wm_framework.errors import WMUsageError

#: Stages that build a run rather than act on a finished one.
_BUILDING = {"data": "`wm data collect` or `wm run`", "train": "`wm run` (or `wm run --resume`)"}


def parse_sets(items: list[str]) -> dict:
    """``["a=1", "b.c=[2,3]"]`` -> ``{"a": 1, "b": {"c": [2, 3]}}`` (values parsed as TOML)."""
    from wm_framework.recipe import parse_value

    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not part for part in key.split(".")):
            raise WMUsageError(f"--set: expected key=value, got '{item}'")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise WMUsageError(f"--set: '{key}' goes inside '{part}', which is already a value")
        node[leaf] = parse_value(value.strip())
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def open_run(run_dir: Path, data: Path | None = None, test_data: Path | None = None):
    """The RunContext of ``run_dir``, reading other stores when ``data`` / ``test_data`` are given."""
    from wm_framework.runs.context import load_run

    from wm_framework.console import log_command_to_run

    ctx = load_run(run_dir)
    log_command_to_run(ctx.path)  # what this command says goes into the run's run.log too
    if data is not None or test_data is not None:
        ctx.use_stores(train=data, test=test_data)
    return ctx


def stage_config(ctx, name: str, overrides: dict | None = None):
    """The validated config of stage ``name`` for a finished run: the recipe's ``[name]`` table
    (or the defaults), with ``overrides`` merged over it (None values are ignored); a bad
    value is one line naming the field. Every command that runs a stage on a run uses this."""
    from pydantic import ValidationError

    from wm_framework.plugins import get_registry
    from wm_framework.recipe import pydantic_problems
    from wm_framework.registry import resolved

    config = resolved(get_registry().get("stages", name).meta.get("config"))
    base = ctx.recipe.stage_config(name)
    params = base.model_dump() if hasattr(base, "model_dump") else dict(base or {})
    params = _merge(params, {k: v for k, v in (overrides or {}).items() if v is not None})
    if config is None:  # a stage without a config model takes its table as keyword arguments
        return params
    try:
        return config(**params)
    except ValidationError as e:  # pydantic's message is many lines; the CLI wants one
        raise WMUsageError(f"{name}: " + "; ".join(pydantic_problems(e, (name,)))) from None


def stage_command(name: str, run_dir: Path, sets: list[str] | None = None, data: Path | None = None,
                  test_data: Path | None = None):
    """Run the registered stage ``name`` on the finished run ``run_dir``; returns what the stage returns."""
    from wm_framework.plugins import get_registry

    if name in _BUILDING:
        raise WMUsageError(f"stage '{name}' builds a run; use {_BUILDING[name]}")
    registry = get_registry()
    registry.get("stages", name)  # an unknown name: one line with the registered ones
    ctx = open_run(run_dir, data, test_data)
    cfg = stage_config(ctx, name, parse_sets(sets or []))
    params = cfg.model_dump() if hasattr(cfg, "model_dump") else cfg
    return registry.create("stages", name, **params)(ctx)


def stage_cli(
    name: str = typer.Argument(..., help="A registered stage (`wm components list --kind stages`)."),
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<timestamp>_<recipe>/), or a sweep's directory."),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                                             help="Override the recipe's [NAME] table (TOML value; repeatable)."),
    runs: Optional[List[str]] = typer.Option(None, "--runs", metavar="LABELS", help=RUNS_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help="Training store to use instead of the run's."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="Held-out test store to use instead of the run's."),
):
    """Run any registered stage on a finished run (or each run of a sweep).

    The recipe's [NAME] table gives the defaults, --set overrides them. Results, plots and
    the report section go into the run directory as when `wm run` runs the stage.
    """
    from wm_framework.runs.sweep_dirs import on_sweep

    if on_sweep(f"stage_{name}", f"Stage {name} across the sweep", run_dir, runs,
                lambda path: stage_command(name, path, sets, data, test_data), lambda _: {}, typer.echo):
        return
    stage_command(name, run_dir, sets, data, test_data)
    typer.echo(f"report: {Path(run_dir) / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("stage")(stage_cli)
