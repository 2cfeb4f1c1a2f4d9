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

app = typer.Typer(name="wm", help="Train and evaluate world models across environments.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
plugins_app = typer.Typer(help="Installed plugins.", no_args_is_help=True)
components_app = typer.Typer(help="Registered components (envs, policies, encoders, ...).", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
app.add_typer(components_app, name="components")

_DEBUG = {"on": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    """wm-framework: plugins supply environments, models and losses; recipes compose them."""
    _DEBUG["on"] = debug or os.environ.get("WM_DEBUG") == "1"
    if version:
        from wm_framework import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


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
    from rich.table import Table

    table = Table(title="wm-framework plugins")
    for col in ("plugin", "package", "version", "status", "components"):
        table.add_column(col)
    colors = {"ok": "green", "unavailable": "yellow", "failed": "red", "disabled": "dim"}
    for r in rows:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["components"].items()) or "—"
        if r["error"]:
            comps += f"\n[{colors[r['status']]}]{r['error']}[/]"
        table.add_row(r["name"], r["package"], r["version"], f"[{colors.get(r['status'], 'white')}]{r['status']}[/]", comps)
    Console().print(table)


@components_app.command("list")
def components_list(kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind (envs, encoders, ...)."),
                    as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List every registered component with its plugin and parameters."""
    from wm_framework.registry import get_registry, normalize_kind

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
@app.command("validate")
def validate_cmd(recipe: Path = typer.Argument(..., help="Recipe TOML file."),
                 overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides KEY=VALUE."),
                 smoke: bool = typer.Option(False, "--smoke", help="Validate the smoke-scaled recipe.")):
    """Check a recipe; print every problem as `section.key: message` (exit 2)."""
    from wm_framework.recipe import expand_sweep, load_toml, parse_overrides, resolve, validate

    data = resolve(load_toml(recipe), parse_overrides(overrides or []), smoke)
    validate(data)
    runs = expand_sweep(data)
    for _, sub in runs:
        validate(sub)
    typer.echo(f"{recipe}: ok" + (f" ({len(runs)} sweep runs)" if len(runs) > 1 else ""))


@app.command("run")
def run_cmd(recipe: Optional[Path] = typer.Argument(None, help="Recipe TOML file."),
            overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides KEY=VALUE (values parsed as TOML)."),
            smoke: bool = typer.Option(False, "--smoke", help="Scale the recipe down to run on a CPU in minutes."),
            out: Optional[Path] = typer.Option(None, "--out", help="Parent directory for the run (default ./runs)."),
            resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint."),
            nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", help="Data-parallel training: processes (GPUs) on this node; re-launches through torchrun."),
            nnodes: int = typer.Option(1, "--nnodes", help="Nodes in the job (with --nproc-per-node)."),
            node_rank: int = typer.Option(0, "--node-rank", help="This node's rank, 0 .. nnodes-1."),
            master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Address of the node with --node-rank 0."),
            master_port: Optional[int] = typer.Option(None, "--master-port", help="Rendezvous port on that node (default 29500).")):
    """Run a recipe: data -> train -> probes/eval -> report."""
    if nproc_per_node is not None or nnodes > 1:
        from wm_framework.run import launch_torchrun

        args = ([str(recipe)] if recipe else []) + list(overrides or [])
        args += (["--smoke"] if smoke else []) + (["--out", str(out)] if out else []) + (["--resume", str(resume)] if resume else [])
        rc = launch_torchrun(args, nproc_per_node=nproc_per_node or 1, nnodes=nnodes, node_rank=node_rank,
                             master_addr=master_addr, master_port=master_port)
        raise typer.Exit(rc)
    from wm_framework.run import run_recipe
    from wm_framework.train.distributed import env_info

    path = run_recipe(str(recipe) if recipe else None, overrides or [], smoke, str(out) if out else None,
                      str(resume) if resume else None)
    if env_info().is_main:
        typer.echo(f"run directory: {path}")
        if (path / "report.md").is_file():
            typer.echo(f"report: {path / 'report.md'}")


# ----------------------------------------------------------------------------- mounted groups
def _mount_optional(app: typer.Typer) -> None:
    """Command groups living in their own modules (data, probe, eval)."""
    import importlib

    for module_name, name in (("wm_framework.commands.data", "data"),):
        try:
            mod = importlib.import_module(module_name)
        except ImportError:
            continue
        app.add_typer(mod.app, name=name)
    for module_name in ("wm_framework.commands.probe", "wm_framework.commands.eval",
                        "wm_framework.commands.plan", "wm_framework.commands.surprise"):
        try:
            mod = importlib.import_module(module_name)
        except ImportError:
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            register(app)


def build_app() -> typer.Typer:
    _mount_optional(app)
    from wm_framework.plugins import get_plugin_manager

    get_plugin_manager().add_commands(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning errors into one line and an exit code."""
    from wm_framework.errors import RecipeError, WMError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("WM_DEBUG") == "1"
    try:
        cli = build_app()
        rc = cli(args=argv, prog_name="wm", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # a command's typer.Exit(code) comes back as rc
    except RecipeError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return 2
    except WMError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except Exception as e:  # noqa: BLE001 - click usage errors and anything unexpected
        # Duck-typed: Typer may use click or its own vendored copy (typer._click).
        name = type(e).__name__
        if name == "Abort":
            print("interrupted", file=sys.stderr)
            return 130
        if name == "Exit" and hasattr(e, "exit_code"):
            return int(e.exit_code)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return int(e.exit_code)
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
