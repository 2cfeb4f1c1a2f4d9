"""`wm data`: collect, inspect, validate, import and compare episode stores.

Mounted by the core CLI as ``wm data``; every bad input raises WMUsageError, which the
CLI prints as one line with exit code 2. Run standalone with
``python -m wm_framework.commands.data --help``.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from wm_framework.commands import checked_out_path
from wm_framework.errors import WMUsageError

app = typer.Typer(help="Episode datasets: collect, info, validate, import, export, show, overlap.", no_args_is_help=True,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})  # plain help: see cli.PLAIN


def parse_value(text: str):
    """A command-line value parsed as TOML (``3``, ``true``, ``[64, 64]``, ``"x"``); bare words stay strings."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def parse_overrides(items: list[str]) -> tuple[dict, dict]:
    """``env.k=v`` / ``policy.k=v`` arguments -> (env params, params for every policy)."""
    env, policy = {}, {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("env", "policy") or not name:
            raise WMUsageError(f"expected env.PARAM=VALUE or policy.PARAM=VALUE, got '{item}'")
        (env if section == "env" else policy)[name] = parse_value(value)
    return env, policy


@app.command("collect")
def collect_cmd(
    overrides: Optional[List[str]] = typer.Argument(None, help="env.PARAM=VALUE / policy.PARAM=VALUE (values parsed as TOML)."),
    env: str = typer.Option(..., "--env", help="Registered env name (see `wm components list --kind envs`)."),
    policy: List[str] = typer.Option(..., "--policy", help="Policy name; repeat for several policies."),
    episodes: int = typer.Option(..., "--episodes", min=1, max=10**7, help="Target number of episodes PER POLICY (existing ones count)."),
    out: str = typer.Option(..., "--out", help="Store path (created, or topped up if it exists)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, max=10**7, help="Truncate episodes after this many steps."),
    workers: int = typer.Option(1, "--workers", min=1, max=1024, help="Worker processes running env + policy."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Base seed of the episode seeds."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Collect episodes of policies in an env into a Zarr store."""
    from wm_framework.data.collect import collect

    env_params, policy_params = parse_overrides(overrides or [])
    out = checked_out_path(out, store=True)
    store = collect(out, {"type": env, **env_params}, [{"type": p, **policy_params} for p in policy],
                    episodes=episodes, max_steps=max_steps, workers=workers, seed=seed, progress=progress)
    typer.echo(f"{store.path}: {store.num_episodes} episodes, {store.num_frames} frames")


@app.command("info")
def info_cmd(path: str = typer.Argument(..., help="Store path or URL."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """Summarise a store: episodes, frames, policies, returns, sizes, arrays."""
    from wm_framework.data.inspect import store_info

    info = store_info(path)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ratio = info["bytes_raw"] / max(info["bytes_on_disk"], 1)
    console.print(f"[bold]{info['path']}[/]  env [cyan]{info['env'].get('name')}[/] {info['env'].get('params', {})}")
    console.print(f"{info['episodes']} episodes, {info['frames']} frames, obs {info['obs']['key']} {info['obs']['shape']} "
                  f"{info['obs_layout']}, "
                  f"action {info['action']}, labels {', '.join(info['label_names']) or '-'}")
    console.print(f"{_mb(info['bytes_on_disk'])} on disk for {_mb(info['bytes_raw'])} raw ({ratio:.1f}x)")
    table = Table("policy", "episodes", "mean length", "mean return")
    for p, count in info["policies"].items():
        table.add_row(p, str(count), f"{info['mean_length'][p]:.1f}", f"{info['mean_return'][p]:.3f}")
    console.print(table)
    arrays = Table("array", "shape", "dtype", "chunks")
    for name, a in info["arrays"].items():
        arrays.add_row(name, str(tuple(a["shape"])), a["dtype"], str(tuple(a["chunks"])))
    console.print(arrays)
    console.print(f"look at it: [cyan]wm data show {info['path']} --episode 0[/] (MP4 with step, action, reward, labels), "
                  "[cyan]--grid[/] (a contact sheet of random frames per policy)")


@app.command("validate")
def validate_cmd(path: str = typer.Argument(..., help="Store path or URL.")):
    """Decode every chunk and check the episode structure; exit 0 if valid, 2 if not."""
    from wm_framework.data.inspect import uncommitted_rows, validate_store
    from wm_framework.data.store import EpisodeStore

    problems = validate_store(path)
    if problems:
        for p in problems:
            typer.echo(f"invalid: {p}", err=True)
        raise typer.Exit(2)
    store = EpisodeStore.open(path)
    extra = uncommitted_rows(store)
    note = f" ({extra} rows of an interrupted append are ignored)" if extra > 0 else ""
    typer.echo(f"ok: {store.num_episodes} episodes, {store.num_frames} frames{note}")


@app.command("import")
def import_cmd(fmt: str = typer.Argument(..., metavar="FORMAT", help="npy-shards | hdf5 | parquet | lerobot"),
               src: str = typer.Argument(..., help="Source file or directory."),
               out: str = typer.Option(..., "--out", help="New store path (must not exist)."),
               policy: str = typer.Option("imported", "--policy", help="Policy name recorded for the episodes."),
               layout: Optional[str] = typer.Option(None, "--layout", help="Pixel layout of the source frames: hwc | chw | hw "
                                                    "(grayscale). Default: detected; refused when the shape is ambiguous."),
               camera: Optional[str] = typer.Option(None, "--camera", help="lerobot: the camera whose frames are the "
                                                    "observation (NAME of observation.images.NAME), or 'none' for "
                                                    "observation.state. Default: the only camera."),
               skip_stats_check: bool = typer.Option(False, "--skip-stats-check", help="lerobot: import even if "
                                                     "meta/stats.json disagrees with the data.")):
    """Import episodes from another format into a new store."""
    from wm_framework.data.importers import import_store

    store = import_store(fmt, src, checked_out_path(out, store=True), policy=policy, layout=layout, camera=camera,
                         check_stats=not skip_stats_check)
    typer.echo(f"{store.path}: imported {store.num_episodes} episodes, {store.num_frames} frames")
    params = store.env.get("params", {})
    if params.get("final_actions_without_obs"):
        typer.echo(f"note: {params['final_actions_without_obs']} episodes end with an action whose outcome the source does "
                   f"not hold (no observation after it; rewards {params['final_reward_without_obs']:g} in total); "
                   "they are not store rows")


@app.command("export")
def export_cmd(fmt: str = typer.Argument(..., metavar="FORMAT", help="lerobot"),
               store: str = typer.Argument(..., metavar="STORE", help="Store path."),
               out: str = typer.Argument(..., metavar="OUT", help="New dataset directory (must not exist)."),
               camera: str = typer.Option("main", "--camera", help="Camera name: frames become observation.images.NAME."),
               fps: Optional[int] = typer.Option(None, "--fps", help="Steps per second. Default: the store's, else its "
                                                 "env's render_fps, else 15."),
               codec: str = typer.Option("h264", "--codec", help="h264 (yuv420p, lossy, plays anywhere) | lossless "
                                         "(RGB H.264, bit-exact, FFmpeg-based readers)."),
               progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")):
    """Write a store in another format (a LeRobot v3.0 dataset)."""
    if fmt != "lerobot":
        raise WMUsageError(f"unknown export format '{fmt}'; formats: lerobot")
    from wm_framework.data.lerobot_export import export_lerobot

    done = export_lerobot(store, checked_out_path(out), camera=camera, fps=fps, codec=codec, progress=progress)
    typer.echo(f"{done['path']}: {done['episodes']} episodes, {done['frames']} frames at {done['fps']} fps "
               f"in {done['files']} data file(s)" + (f", video {done['codec']}" if done["codec"] else ""))


@app.command("show")
def show_cmd(path: str = typer.Argument(..., metavar="STORE", help="Store path."),
             episode: int = typer.Option(0, "--episode", help="Episode to render."),
             out: Optional[str] = typer.Option(None, "--out", help="FILE.mp4 | FILE.gif (FILE.png with --grid). "
                                               "Default: <store>_episode<N>.mp4 / <store>_grid.png here."),
             grid: bool = typer.Option(False, "--grid", help="A contact sheet of random frames, a row per policy (PNG)."),
             per_policy: int = typer.Option(8, "--per-policy", help="--grid: frames per policy."),
             seed: int = typer.Option(0, "--seed", help="--grid: seed of the frame draw."),
             markers: Optional[str] = typer.Option(None, "--markers", help="Labels that are pixel positions, comma-"
                                                   "separated (<thing>_x, <thing>_y). Default: declared by the store or its env."),
             fps: Optional[int] = typer.Option(None, "--fps", help="Frames per second of the video."),
             start: int = typer.Option(0, "--start", help="First row of the episode to render."),
             stop: Optional[int] = typer.Option(None, "--stop", help="Row after the last one to render."),
             progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")):
    """Render an episode with its step, action, reward and labels (MP4/GIF), or a contact sheet (--grid)."""
    from wm_framework.data.viewer import contact_sheet, show_episode

    names = [n.strip() for n in markers.split(",") if n.strip()] if markers is not None else None
    if out is not None:
        out = checked_out_path(out)
    if grid:
        done = contact_sheet(path, out, per_policy=per_policy, seed=seed, markers=names)
        typer.echo(f"{done['path']}: {done['per_policy']} random frames of each of {len(done['policies'])} "
                   f"policies (seed {done['seed']})")
    else:
        done = show_episode(path, episode, out, markers=names, fps=fps, start=start, stop=stop, progress=progress)
        what = "frames" if done["pixels"] else "steps of the state plot"
        typer.echo(f"{done['path']}: episode {done['episode']}, {done['frames']} {what} at {done['fps']} fps")
    typer.echo(f"markers: {', '.join(done['markers'])} (from {done['markers_from']})" if done["markers"]
               else f"markers: none ({done['markers_from']})")


@app.command("overlap")
def overlap_cmd(a: str = typer.Argument(..., metavar="A", help="Reference store (e.g. the training store)."),
                b: str = typer.Argument(..., metavar="B", help="Store whose windows are looked up in A (e.g. the test store)."),
                window: int = typer.Option(16, "--window", help="Frames per window."),
                frameskip: int = typer.Option(1, "--frameskip", help="Rows between consecutive frames of a window."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON instead of one line.")):
    """Count the windows of B that occur bit for bit in A (is a held-out store held out?)."""
    from wm_framework.data.overlap import window_overlap
    from wm_framework.data.store import EpisodeStore

    report = window_overlap(EpisodeStore.open(a), EpisodeStore.open(b), window, frameskip)
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else report.describe())


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def main() -> None:
    """Standalone entry point: WMUsageError -> one line, exit 2 (as the `wm` CLI does)."""
    import sys

    from wm_framework.errors import WMError

    try:
        code = app(standalone_mode=False)  # typer.Exit(n) comes back as the return value here
        sys.exit(code if isinstance(code, int) else 0)
    except WMError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click's usage errors in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
