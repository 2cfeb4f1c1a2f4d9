"""`wm run`: resolve a recipe, create the run directory, and run its stages (and sweeps)."""

from __future__ import annotations

import time
from pathlib import Path

import tomli_w

from wm_framework.errors import WMUsageError
from wm_framework.recipe import expand_sweep, load_toml, parse_overrides, resolve, validate
from wm_framework.runs import RunContext, git_revision, load_run, new_run_dir
from wm_framework.train.checkpoint import atomic_write_json, atomic_write_text


def ensure_stores(ctx: RunContext) -> None:
    """Collect the train/test stores that do not exist yet (skipped when present)."""
    d = ctx.recipe.data
    if d is None:
        return
    for path, cfg, what in ((d.train, d.collect, "data.train"), (d.test, d.collect_test, "data.test")):
        if path is None:
            continue
        if _store_complete(path, cfg):
            continue
        if cfg is None:
            if Path(path).exists() or "://" in path:
                continue
            raise WMUsageError(f"{what}: store '{path}' does not exist and the recipe has no collect table to build it")
        from wm_framework.collect import collect

        collect(path, env=cfg.env, policies=cfg.policies, episodes=cfg.episodes, max_steps=cfg.max_steps,
                workers=cfg.workers, seed=cfg.seed, progress=getattr(ctx, "progress", True))
    ctx._stores = None


def _store_complete(path: str, cfg) -> bool:
    """A store exists and (when a collect table says how many) holds every episode it asks for."""
    if "://" not in path and not Path(path).exists():
        return False
    if cfg is None:
        return True
    from wm_framework.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    for pol in cfg.policies:
        if int((store.episode_policy == pol["type"]).sum()) < cfg.episodes:
            return False
    return True


def _write_run_meta(path: Path, data: dict, label: str = "") -> None:
    from wm_framework.plugins import get_plugin_manager

    atomic_write_text(path / "recipe.resolved.toml", tomli_w.dumps(_toml_safe(data)))
    atomic_write_json(path / "run.json", {
        "label": label,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "git_revision": git_revision(),
        "plugins": get_plugin_manager().versions(),
    })


def _toml_safe(obj):
    if isinstance(obj, dict):
        return {k: _toml_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_toml_safe(v) for v in obj]
    return obj


def run_stages(ctx: RunContext, stages: list[str]) -> None:
    from wm_framework.registry import get_registry

    reg = get_registry()
    for stage in stages:
        cfg = ctx.recipe.stage_config(stage)
        params = cfg.model_dump() if hasattr(cfg, "model_dump") else (cfg or {})
        if stage in ("data", "train"):
            params = {}
        fn = reg.create("stages", stage, **params)
        if getattr(ctx, "progress", True):
            from rich.console import Console

            Console(stderr=True).print(f"[bold cyan]stage[/] {stage}" + (f" [{ctx.label}]" if ctx.label else ""))
        fn(ctx)


def run_recipe(recipe_path: str | None, overrides: list[str] | None = None, smoke: bool = False,
               out: str | None = None, resume: str | None = None, progress: bool = True) -> Path:
    """Run a recipe end to end; returns the run directory."""
    if resume:
        ctx = load_run(resume)
        data = load_toml(Path(resume) / "recipe.resolved.toml")
        ctx.resume, ctx.progress = True, progress
        _run_all(ctx, data, resumed=True)
        return ctx.path
    if recipe_path is None:
        raise WMUsageError("give a recipe file, or --resume RUN_DIR")
    data = resolve(load_toml(recipe_path), parse_overrides(overrides or []), smoke)
    recipe = validate(data)  # everything checked before any directory is made
    for label, sub in expand_sweep(data):
        validate(sub)
    path = new_run_dir(recipe.name + ("_smoke" if smoke else ""), out or "runs")
    _write_run_meta(path, data)
    ctx = RunContext(path, recipe)
    ctx.resume, ctx.progress = False, progress
    _run_all(ctx, data, resumed=False)
    return path


def _run_all(ctx: RunContext, data: dict, resumed: bool) -> None:
    runs = expand_sweep(data)
    if len(runs) == 1 and runs[0][0] == "":
        run_stages(ctx, ctx.recipe.stages)
        _summary(ctx)
        return
    for label, sub in runs:
        sub_path = ctx.path / "sweep" / label
        if not (sub_path / "recipe.resolved.toml").is_file():
            sub_path.mkdir(parents=True, exist_ok=True)
            _write_run_meta(sub_path, {k: v for k, v in sub.items()}, label)
        sub_ctx = load_run(sub_path)
        sub_ctx.resume, sub_ctx.progress, sub_ctx.label = resumed, ctx.progress, label
        done = (sub_path / "DONE").is_file()
        if not done:
            run_stages(sub_ctx, sub_ctx.recipe.stages)
            atomic_write_text(sub_path / "DONE", "")
        _summary(sub_ctx)
        ctx.sweep_runs.append((label, sub_ctx))
    after = ctx.recipe.sweep.after_stages if ctx.recipe.sweep else []
    run_stages(ctx, after)
    _sweep_summary(ctx)


def _summary(ctx: RunContext) -> None:
    res = ctx.results().get("train")
    if not res:
        return
    rows = [("steps", res.get("global_step")), ("best val loss", res.get("best_val_loss")),
            ("best step", res.get("best_step")), ("final grad norm", res.get("final_grad_norm"))]
    md = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows)
    md += "\n\nMetrics per step: `metrics.jsonl`; checkpoints: `checkpoints/`."
    ctx.write_report_section("train", "Training", md)


def _sweep_summary(ctx: RunContext) -> None:
    rows = []
    table = {}
    for label, sub in ctx.sweep_runs:
        res = sub.results().get("train", {})
        table[label] = res
        rows.append(f"| {label} | {_fmt(res.get('best_val_loss'))} | {_fmt(res.get('best_step'))} | [report](sweep/{label}/report.md) |")
    ctx.update_results("sweep", table)
    md = "| run | best val loss | best step | report |\n|---|---|---|---|\n" + "\n".join(rows)
    ctx.write_report_section("sweep", "Sweep runs", md)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)
