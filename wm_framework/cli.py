"""The `wm` command line (Typer).

Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage, 130 interrupted. Errors
are one line on stderr; ``--debug`` shows the traceback. Nothing heavy (torch, any
environment) is imported until a command needs it, so ``wm --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

#: `-h` works like `--help` everywhere: click hands a context's help options to its
#: sub-commands, plugin commands included.
HELP = {"help_option_names": ["-h", "--help"]}
#: Plain (click) help text, not Rich panels: typer's Rich help imports rich.markdown and
#: markdown-it, 0.14 s of the 0.48 s `wm --help` took (benchmarks/startup.py). Tables
#: that commands print (`wm plugins list`, ...) still use Rich.
PLAIN = {"rich_markup_mode": None, "context_settings": HELP}

app = typer.Typer(name="wm", help="Train and evaluate world models across environments.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, **PLAIN)
plugins_app = typer.Typer(help="Installed plugins.", no_args_is_help=True, **PLAIN)
components_app = typer.Typer(help="Registered components (envs, policies, encoders, ...).", no_args_is_help=True,
                             **PLAIN)
recipes_app = typer.Typer(help="The recipes that ship with wm-framework.", no_args_is_help=True, **PLAIN)
app.add_typer(plugins_app, name="plugins")
app.add_typer(components_app, name="components")
app.add_typer(recipes_app, name="recipes")

_DEBUG = {"on": False}


def _print_version(value: bool) -> None:
    # Eager: runs while parsing, before click asks for a sub-command ("Missing command").
    if value:
        from wm_framework import __version__

        typer.echo(f"wm-framework {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Console: warnings and errors only, no progress bars (run.log keeps everything)."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Console and run.log: debug messages too."),
          version: bool = typer.Option(False, "--version", "-V", help="Print the version and exit.",
                                       callback=_print_version, is_eager=True)):
    """wm-framework: plugins supply environments, models and losses; recipes compose them."""
    _DEBUG["on"] = debug or os.environ.get("WM_DEBUG") == "1"
    if quiet and verbose:
        from wm_framework.errors import WMUsageError

        raise WMUsageError("--quiet and --verbose: choose one")
    from wm_framework.console import configure

    configure(-1 if quiet else (1 if verbose else 0))


# ----------------------------------------------------------------------------- plugins / components
@plugins_app.command("list")
def plugins_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List plugins with their package, version, status and components."""
    from wm_framework.plugins import get_plugin_manager

    pm = get_plugin_manager()
    rows = [p.to_json() for p in pm.plugins.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="wm-framework plugins")
    for col in ("plugin", "package", "version", "status", "components"):
        table.add_column(col)
    colors = {"ok": "green", "unavailable": "yellow", "failed": "red", "disabled": "dim"}
    for r in rows:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["components"].items()) or "—"
        if r["error"]:
            comps += f"\n[{colors[r['status']]}]{escape(r['error'])}[/]"
        for w in r["warnings"]:
            comps += f"\n[yellow]{escape(w)}[/]"
        table.add_row(r["name"], r["package"], r["version"], f"[{colors.get(r['status'], 'white')}]{r['status']}[/]", comps)
    Console().print(table)


@components_app.command("list")
def components_list(kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind (envs, encoders, ...)."),
                    as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List every registered component with its plugin and parameters."""
    from wm_framework.plugins import get_registry
    from wm_framework.registry import normalize_kind

    reg = get_registry()
    kinds = [normalize_kind(kind)] if kind else list(reg.all())
    rows = []
    for k in kinds:
        for name, comp in sorted(reg.by_kind(k).items()):
            params = [{"name": p.name, "default": None if p.required else _jsonable(p.default),
                       "required": p.required, "type": p.annotation} for p in comp.params()]
            rows.append({"kind": k, "name": name, "plugin": comp.plugin, "description": comp.summary, "params": params})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="components")
    for col in ("kind", "name", "plugin", "parameters", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        comp = reg.get(r["kind"], r["name"])
        table.add_row(r["kind"], r["name"], r["plugin"], ", ".join(p.describe() for p in comp.params()), r["description"])
    Console().print(table)


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


# ----------------------------------------------------------------------------- recipes
@recipes_app.command("list")
def recipes_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """The shipped recipes: name, description, presets, and whether full size needs a GPU."""
    from wm_framework.shipped_recipes import shipped_recipes

    rows = shipped_recipes()
    if as_json:
        typer.echo(json.dumps([{"name": r.name, "description": r.description, "needs_gpu": r.needs_gpu,
                                "presets": list(r.presets), "path": str(r.path)} for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="shipped recipes (wm run NAME [--preset P]; wm recipes cp NAME to edit)")
    for col in ("name", "full size", "presets", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.name, "GPU" if r.needs_gpu else "CPU", ", ".join(r.presets) or "-", r.description)
    Console().print(table)


@recipes_app.command("cp")
def recipes_cp(name: str = typer.Argument(..., help="A shipped recipe's name (see `wm recipes list`)."),
               dest: Optional[Path] = typer.Argument(None, help="File or folder to copy to (default ./NAME.toml)."),
               force: bool = typer.Option(False, "--force", help="Overwrite an existing file.")):
    """Copy a shipped recipe here to edit it."""
    from wm_framework.shipped_recipes import copy_recipe

    typer.echo(f"copied {name} to {copy_recipe(name, dest, force)}")


@recipes_app.command("explain")
def recipes_explain(recipe: str = typer.Argument(..., help="A shipped recipe's name, or a recipe TOML file."),
                    section: Optional[str] = typer.Argument(None, help="Only this section and those below it: train, "
                                                            "data.collect, model.encoder, probe, ..."),
                    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Apply the recipe's [presets.NAME] first."),
                    as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Every field of a recipe: type, default, the recipe's value and what it means."""
    from wm_framework.recipe_explain_view import explain_command

    explain_command(recipe, section, preset, as_json)


@app.command("validate")
def validate_cmd(recipe: str = typer.Argument(..., help="Recipe TOML file, or a shipped recipe's name."),
                 overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides KEY=VALUE."),
                 smoke: bool = typer.Option(False, "--smoke", help="Validate only the smoke preset."),
                 preset: Optional[str] = typer.Option(None, "--preset", help="Validate only this preset (default: the recipe and every preset).")):
    """Check a recipe and every preset; print every problem as `section.key: message` (exit 2)."""
    from wm_framework.recipe import expand_sweep, load_toml, parse_overrides, resolve, validate, validate_all_presets
    from wm_framework.shipped_recipes import find_recipe

    path = find_recipe(recipe)
    raw, ov = load_toml(path), parse_overrides(overrides or [])
    if not smoke and preset is None:
        checked = validate_all_presets(raw, ov)
        typer.echo(f"{path}: ok ({', '.join(checked)})")
        return
    data = resolve(raw, ov, smoke, preset)
    validate(data)
    runs = expand_sweep(data)
    for _, sub in runs:
        validate(sub)
    typer.echo(f"{path}: ok" + (f" ({len(runs)} sweep runs)" if len(runs) > 1 else ""))


@app.command("run")
def run_cmd(recipe: Optional[str] = typer.Argument(None, help="Recipe TOML file, or a shipped recipe's name (`wm recipes list`)."),
            overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides KEY=VALUE (values parsed as TOML)."),
            preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Apply the recipe's [presets.NAME] overrides (e.g. cpu, smoke)."),
            smoke: bool = typer.Option(False, "--smoke", help="Same as --preset smoke: the pipeline CPU-sized, in minutes."),
            out: Optional[Path] = typer.Option(None, "--out", help="Parent directory for the run (default ./runs)."),
            resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint."),
            nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", min=1, help="Data-parallel training: processes (GPUs) on this node; re-launches through torchrun."),
            nnodes: int = typer.Option(1, "--nnodes", min=1, help="Nodes in the job (with --nproc-per-node)."),
            node_rank: int = typer.Option(0, "--node-rank", min=0, help="This node's rank, 0 .. nnodes-1."),
            master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Address of the node with --node-rank 0."),
            master_port: Optional[int] = typer.Option(None, "--master-port", help="Rendezvous port on that node (default 29500).")):
    """Run a recipe: data -> train -> probes/eval -> report."""
    if recipe is not None and resume is None:
        from wm_framework.shipped_recipes import find_recipe

        recipe = str(find_recipe(recipe))
    if smoke and preset not in (None, "smoke"):
        from wm_framework.errors import WMUsageError

        raise WMUsageError(f"--smoke and --preset {preset}: choose one (--smoke means --preset smoke)")
    preset = preset or ("smoke" if smoke else None)
    if out is not None:
        from wm_framework.commands import checked_out_path

        checked_out_path(out)
    if nproc_per_node is not None or nnodes > 1:
        from wm_framework.runs.run import launch_torchrun

        args = ([recipe] if recipe else []) + list(overrides or [])
        args += (["--preset", preset] if preset else []) + (["--out", str(out)] if out else []) + (["--resume", str(resume)] if resume else [])
        rc = launch_torchrun(args, nproc_per_node=nproc_per_node or 1, nnodes=nnodes, node_rank=node_rank,
                             master_addr=master_addr, master_port=master_port)
        raise typer.Exit(rc)
    from wm_framework.runs.run import run_recipe
    from wm_framework.train.distributed import env_info

    path = run_recipe(recipe, overrides or [], out=str(out) if out else None,
                      resume=str(resume) if resume else None, preset=preset)
    if env_info().is_main:
        typer.echo(f"run directory: {path}")
        if (path / "report.md").is_file():
            typer.echo(f"report: {path / 'report.md'}")


# ----------------------------------------------------------------------------- mounted groups
def _mount_commands(app: typer.Typer) -> None:
    """The first-party command modules (data, probe, eval, plan, surprise, stage). Imported
    directly: a broken first-party module is a bug that must show, not a missing command."""
    from wm_framework.commands import data, eval as eval_cmd, plan, probe, stage, surprise

    app.add_typer(data.app, name="data")
    for mod in (probe, eval_cmd, plan, surprise, stage):
        mod.register(app)


def build_app() -> typer.Typer:
    _mount_commands(app)
    from wm_framework.plugins import get_plugin_manager

    get_plugin_manager().add_commands(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning errors into one line and an exit code."""
    from wm_framework.errors import RecipeError, WMError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("WM_DEBUG") == "1"
    from wm_framework.stops import describe_stop, install_signal_handlers, pending_stop

    install_signal_handlers()  # SIGTERM unwinds like Ctrl-C: workers stopped, locks released, one line
    try:
        try:
            cli = build_app()
            rc = cli(args=argv, prog_name="wm", standalone_mode=False)
            stop = pending_stop(rc)  # Typer returned 130 for an interrupt it swallowed
            if stop is not None:
                _quiet_shutdown()
                print(stop.line, file=sys.stderr)
                return stop.exit_code
            return rc if isinstance(rc, int) else 0  # a command's typer.Exit(code) comes back as rc
        except BaseException as e:
            _quiet_shutdown()
            stop = None if isinstance(e, SystemExit) else describe_stop(e)
            if stop is None or (debug and stop.exit_code == 1):
                raise
            print(stop.line, file=sys.stderr)
            return stop.exit_code
    except RecipeError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return 2
    except WMError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except Exception as e:  # noqa: BLE001 - click usage errors and anything unexpected
        # Duck-typed: Typer may use click or its own vendored copy (typer._click).
        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):
            return int(e.exit_code)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return int(e.exit_code)
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _quiet_shutdown() -> None:
    """After an error, zarr's event loop may hold tasks and coroutines that die with the
    process; asyncio would log each ("Task was destroyed but it is pending!") and Python
    print each coroutine's "Exception ignored ... Event loop is closed" traceback, ~50
    lines after our one line. They are the error already reported, so they are dropped."""
    import logging
    import types

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.object, types.CoroutineType) or "Event loop is closed" in str(unraisable.exc_value):
            return
        default(unraisable)

    sys.unraisablehook = hook


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
