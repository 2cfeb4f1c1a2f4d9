"""`wm run`: resolve a recipe, create the run directory, and run its stages (and sweeps).

Under torchrun / SLURM (``WORLD_SIZE > 1``) the same code runs on every rank: rank 0
creates the run directory and broadcasts its path, runs the stages before training
(data collection) while the others wait, and alone runs the stages after it (probes,
eval, reports); every rank runs ``train``. ``wm run --nproc-per-node N`` re-launches
itself through ``python -m torch.distributed.run`` (:func:`torchrun_command`).

Sweeps hand their runs to a launcher (``sweep.launcher``, see ``launchers.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from wm_framework.errors import WMRuntimeError, WMUsageError
from wm_framework.recipe import expand_sweep, load_toml, parse_overrides, resolve, validate
from wm_framework.runs.context import RunContext, load_run, new_run_dir
from wm_framework.console import get_logger, run_log
from wm_framework.runs.provenance import command_line, provenance, run_status
from wm_framework.locks import exclusive, run_lock_file
from wm_framework.stops import how_to_continue
from wm_framework.train import distributed
from wm_framework.atomic import atomic_write_json, atomic_write_text

log = get_logger(__name__)

#: Stages every rank of a distributed job runs; the others run on rank 0 alone.
ALL_RANK_STAGES = {"train"}


def _write_run_meta(path: Path, data: dict, label: str = "") -> None:
    from wm_framework.resolved_recipe import write_resolved

    write_resolved(path, data)  # every value the run uses, defaults included (resolved_recipe.py)
    atomic_write_json(path / "run.json", provenance(label))


def run_stages(ctx: RunContext, stages: list[str]) -> None:
    from wm_framework.plugins import get_registry

    reg = get_registry()
    info = distributed.current()
    last_shared = max([i for i, s in enumerate(stages) if s in ALL_RANK_STAGES], default=-1)
    for i, stage in enumerate(stages):
        if info.enabled and stage not in ALL_RANK_STAGES:
            if i > last_shared and not info.is_main:
                continue  # after training the other ranks are done
            if info.is_main:
                _run_stage(ctx, reg, stage)
            if i < last_shared:
                distributed.barrier()  # e.g. the store rank 0 is collecting must exist before training
            continue
        if info.enabled and stage in ALL_RANK_STAGES:
            if info.is_main:
                ctx.data_params()  # written once, by rank 0
            distributed.barrier()
        _run_stage(ctx, reg, stage)


def _run_stage(ctx: RunContext, reg, stage: str) -> None:
    cfg = ctx.recipe.stage_config(stage)
    params = cfg.model_dump() if hasattr(cfg, "model_dump") else (cfg or {})
    fn = reg.create("stages", stage, **params)
    if ctx.progress:
        log.info("stage %s%s", stage, f" [{ctx.label}]" if ctx.label else "")
    log.debug("stage %s config: %s", stage, params)
    fn(ctx)


def run_recipe(recipe_path: str | None, overrides: list[str] | None = None, smoke: bool = False,
               out: str | None = None, resume: str | None = None, progress: bool = True,
               preset: str | None = None) -> Path:
    """Run a recipe end to end (under a named preset, if given; ``smoke=True`` is the
    ``smoke`` preset); returns the run directory."""
    info = distributed.setup(_device_hint(recipe_path, resume))
    try:
        if resume:
            # One process per run: a second `--resume` on it stops here, naming the holder.
            lock = run_lock_file(resume) if info.is_main and Path(resume).is_dir() else None
            with exclusive(lock, f"run {resume}"), how_to_continue(f"resume with: wm run --resume {resume}"):
                ctx, data = _resumed_context(resume, recipe_path, list(overrides or []), smoke, preset, info.is_main)
                ctx.resume, ctx.progress = True, progress and info.is_main
                with run_status(ctx.path if info.is_main else None), run_log(ctx.path if info.is_main else None):
                    log.info("resumed by: %s", command_line(), extra={"console": False})
                    _run_all(ctx, data, resumed=True)
            return ctx.path
        if recipe_path is None:
            raise WMUsageError("give a recipe file, or --resume RUN_DIR")
        data = resolve(load_toml(recipe_path), parse_overrides(overrides or []), smoke, preset)
        preset = preset or ("smoke" if smoke else None)
        recipe = validate(data)  # everything checked before any directory is made
        for label, sub in expand_sweep(data):
            validate(sub)
        if recipe.sweep is not None:
            from wm_framework.runs.launchers import check_launcher

            check_launcher(recipe.sweep.launcher)
        path = None
        if info.is_main:  # one run directory per job, made by rank 0 and broadcast
            path = new_run_dir(recipe.name + (f"_{preset}" if preset else ""), out or "runs",
                               populate=lambda d: _write_run_meta(d, data))
        path = Path(distributed.broadcast_object(str(path) if path else None))
        ctx = RunContext(path, recipe)
        ctx.resume, ctx.progress = False, progress and info.is_main
        with exclusive(run_lock_file(path) if info.is_main else None, f"run {path}"), \
                how_to_continue(f"resume with: wm run --resume {path}"), run_status(path if info.is_main else None), \
                run_log(path if info.is_main else None):
            log.info("run directory %s (command: %s)", path, command_line(), extra={"console": False})
            _run_all(ctx, data, resumed=False)
        return path
    finally:
        if info.enabled:
            distributed.teardown()


def _resumed_context(resume: str, recipe_path: str | None, overrides: list[str], smoke: bool,
                     preset: str | None, is_main: bool) -> tuple[RunContext, dict]:
    """The run to resume, with the overrides that are safe to change applied and recorded
    (``resume.py``); anything else is refused before training continues."""
    from wm_framework.runs.resume import record_resume, resume_overrides

    if recipe_path is not None:
        # `wm run --resume RUN KEY=VALUE` puts the first override where the recipe goes.
        if "=" in recipe_path and not Path(recipe_path).exists():
            overrides = [recipe_path, *overrides]
        else:
            raise WMUsageError(f"--resume {resume}: the run's own recipe is used; drop '{recipe_path}' "
                               "(give only KEY=VALUE overrides)")
    if smoke or preset:
        raise WMUsageError("--resume: a preset cannot change a run that already started; drop --preset/--smoke")
    ctx = load_run(resume)
    data, changes = resume_overrides(load_toml(Path(resume) / "recipe.resolved.toml"), overrides)
    if is_main:
        remove_stale_temp_files(ctx.path)
    if changes:
        if is_main:
            record_resume(ctx.path, data, changes)
        ctx.recipe = validate(data)
    return ctx, data


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files a kill left mid atomic write anywhere in a run
    directory (its root, plots/, checkpoints/, sweep runs): never renamed, so never valid.
    Symlinked directories are not followed."""
    removed = []
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                path = Path(root) / name
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass
    return removed


def _device_hint(recipe_path: str | None, resume: str | None) -> str:
    """The recipe's train.device (before validation) so the process group picks nccl or gloo."""
    try:
        src = Path(resume) / "recipe.resolved.toml" if resume else Path(recipe_path or "")
        return str(load_toml(src).get("train", {}).get("device", "auto"))
    except Exception:  # noqa: BLE001 - validation reports problems properly later
        return "auto"


def torchrun_command(run_args: list[str], nproc_per_node: int, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str | None = None, master_port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m wm_framework.cli run <run_args>``.

    One node without an address uses ``--standalone`` (torchrun picks a free port).
    """
    if nproc_per_node < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise WMUsageError(f"--nproc-per-node {nproc_per_node} / --nnodes {nnodes} / --node-rank {node_rank}: "
                           "need nproc >= 1, nnodes >= 1 and 0 <= node-rank < nnodes")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}"]
    if nnodes == 1 and master_addr is None and master_port is None:
        cmd.append("--standalone")
    else:
        if nnodes > 1 and master_addr is None:
            raise WMUsageError("--nnodes > 1 needs --master-addr (the address of the node with --node-rank 0)")
        cmd += [f"--node-rank={node_rank}", f"--master-addr={master_addr or '127.0.0.1'}",
                f"--master-port={master_port or 29500}"]
    return cmd + ["-m", "wm_framework.cli", "run", *run_args]


def launch_torchrun(run_args: list[str], **kw) -> int:
    """Run ``wm run`` under torchrun and wait; returns its exit code."""
    if distributed.env_info().enabled:
        raise WMUsageError("--nproc-per-node: already running under a distributed launcher (WORLD_SIZE is set)")
    cmd = torchrun_command(run_args, **kw)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; stated so it is not a surprise
    return subprocess.call(cmd, env=env)


def _run_all(ctx: RunContext, data: dict, resumed: bool) -> None:
    try:
        _run_stages_and_sweep(ctx, data, resumed)
    except BaseException:
        ctx.close_tracker(failed=True)  # the W&B run is marked failed, TensorBoard flushed
        raise
    ctx.close_tracker()


def _run_stages_and_sweep(ctx: RunContext, data: dict, resumed: bool) -> None:
    from wm_framework.runs.launchers import LocalLauncher, SweepJob, job_command, resolve_launcher

    info = distributed.current()
    runs = expand_sweep(data)
    if len(runs) == 1 and runs[0][0] == "":
        run_stages(ctx, ctx.recipe.stages)
        if info.is_main:
            _summary(ctx)
            atomic_write_text(ctx.path / "DONE", "")
        return
    jobs = []
    for label, sub in runs:
        sub_path = ctx.path / "sweep" / label
        if info.is_main and not (sub_path / "recipe.resolved.toml").is_file():
            sub_path.mkdir(parents=True, exist_ok=True)
            _write_run_meta(sub_path, sub, label)
        jobs.append(SweepJob(label, sub_path, job_command(sub_path),
                             run_inline=lambda p=sub_path, lb=label: _run_sweep_job(p, lb, resumed, ctx.progress)))
    if info.is_main:
        _prepare_data(jobs)
    distributed.barrier()
    # A distributed job already owns its GPUs: every rank runs the sweep's runs together, in order.
    launcher = LocalLauncher(gpus=[]) if info.enabled else resolve_launcher(ctx.recipe.sweep.launcher)
    launcher(jobs)
    if not info.is_main:
        return
    missing = [j.label for j in jobs if not j.done]
    if missing:
        raise WMRuntimeError(f"sweep runs did not finish: {', '.join(missing)}; continue with: wm run --resume {ctx.path}")
    for job in jobs:
        sub_ctx = load_run(job.path)
        sub_ctx.progress = ctx.progress
        _summary(sub_ctx)
        ctx.sweep_runs.append((job.label, sub_ctx))
    after = ctx.recipe.sweep.after_stages if ctx.recipe.sweep else []
    run_stages(ctx, after)
    _sweep_summary(ctx)


def _prepare_data(jobs) -> None:
    """Build every store the runs need here, one after another, before the runs fan out:
    parallel runs must never collect into the same store at once."""
    from wm_framework.plugins import get_registry

    reg = get_registry()
    for job in jobs:
        if job.done:
            continue
        sub_ctx = load_run(job.path)
        if "data" in sub_ctx.recipe.stages:
            _run_stage(sub_ctx, reg, "data")


def _run_sweep_job(path: Path, label: str, resumed: bool, progress: bool) -> None:
    """One sweep run in this process (the local launcher without GPUs, and distributed jobs)."""
    sub_ctx = load_run(path)
    sub_ctx.resume, sub_ctx.progress, sub_ctx.label = resumed, progress, label
    with run_log(path if distributed.current().is_main else None):
        try:
            run_stages(sub_ctx, sub_ctx.recipe.stages)
        except BaseException:
            sub_ctx.close_tracker(failed=True)
            raise
        sub_ctx.close_tracker()  # before the next run of the sweep opens its own
    if distributed.current().is_main:
        atomic_write_text(path / "DONE", "")


def _summary(ctx: RunContext) -> None:
    res = ctx.results().get("train")
    if not res:
        return
    rows = [("steps", res.get("global_step")), ("best val loss", res.get("best_val_loss")),
            ("best step", res.get("best_step")), ("final grad norm", res.get("final_grad_norm"))]
    sizes = res.get("checkpoint_bytes") or {}
    if sizes:
        order = sorted(sizes, key=lambda k: (k != "weights", k))  # weights first: what every label costs
        rows.append(("checkpoint size", " + ".join(f"{_megabytes(sizes[k])} {k.replace('_', ' ')}" for k in order)))
    md = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows)
    md += "\n\nMetrics per step: `metrics.jsonl`; checkpoints: `checkpoints/`."
    ctx.write_report_section("train", "Training", md)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


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
