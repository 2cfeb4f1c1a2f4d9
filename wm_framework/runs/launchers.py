"""Sweep launchers: how the runs of a sweep are executed.

Protocol (contract for plugins registering through ``register_launchers``)::

    factory(**params) -> launcher
    launcher(jobs: list[SweepJob]) -> None

Each :class:`SweepJob` is one sub-run whose directory already exists (with its
``recipe.resolved.toml``). A launcher runs every job, either in this process
(``job.run_inline()``) or elsewhere (``job.argv`` is a complete command line, e.g. for
a Ray task or a SLURM array; run it with ``job.env`` added to the environment and
the current directory as cwd). A finished job leaves ``DONE`` in its directory; the
core checks for it afterwards, so a launcher need not report results, and a job
that failed is simply re-run by ``wm run --resume``.

A factory may also have a ``validate(**params)`` attribute (e.g. a classmethod): it is
called when the recipe is validated, before any directory is made, and raises
``WMUsageError`` for a bad value or a missing optional dependency (the ``slurm`` launcher
says how to install submitit there, not after the stores are collected).

The built-in ``local`` launcher: on a machine without GPUs the jobs run one after
another in this process; with GPUs each job is a subprocess pinned to one GPU with
``CUDA_VISIBLE_DEVICES``, ``per_gpu`` of them sharing a GPU, as many at once as
there are slots. ``WM_FAKE_GPUS`` (``2`` or ``0,3``) stands in for the GPU list in tests.
The built-in ``slurm`` launcher (``wm_framework/runs/slurm.py``) submits the jobs as a
SLURM job array through submitit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wm_framework.errors import WMRuntimeError, WMUsageError


@dataclass
class SweepJob:
    """One run of a sweep, runnable here (``run_inline``) or as a command (``argv``)."""

    label: str
    path: Path
    argv: list[str]
    run_inline: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return (self.path / "DONE").is_file()


def job_command(path: Path) -> list[str]:
    """The command line that runs a prepared sub-run directory to completion (and resumes it)."""
    return [sys.executable, "-m", "wm_framework.cli", "run", "--resume", str(path)]


def visible_gpus(environ=None) -> list[str]:
    """GPU ids a launcher may hand out: WM_FAKE_GPUS, else CUDA_VISIBLE_DEVICES, else torch's count."""
    env = os.environ if environ is None else environ
    fake = env.get("WM_FAKE_GPUS")
    if fake:
        return _parse_gpu_list(fake)
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [g for g in _parse_gpu_list(cvd) if g != "-1"] if cvd.strip() else []
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch CUDA runtime: no GPUs
        return []


def _parse_gpu_list(text: str) -> list[str]:
    text = text.strip()
    if text.isdigit() and "," not in text:
        return [str(i) for i in range(int(text))]  # a count, e.g. WM_FAKE_GPUS=2
    return [t.strip() for t in text.split(",") if t.strip()]


def gpu_slots(gpus: list[str], per_gpu: int) -> list[str]:
    """One slot per concurrent run: each GPU ``per_gpu`` times, GPUs interleaved (spread before packing)."""
    if per_gpu < 1:
        raise WMUsageError(f"sweep.launcher.per_gpu must be >= 1, got {per_gpu}")
    return [g for _ in range(per_gpu) for g in gpus]


class LocalLauncher:
    """Run a sweep's jobs here: in sequence without GPUs, spread over the visible GPUs with them."""

    def __init__(self, per_gpu: int = 1, gpus: list[str] | str | None = None, max_parallel: int | None = None,
                 inline_without_gpus: bool = True, poll_s: float = 0.2):
        """Args:
            per_gpu: concurrent runs per GPU (pack small runs onto one GPU).
            gpus: GPU ids to use (default: the visible ones; WM_FAKE_GPUS overrides for tests).
            max_parallel: cap on concurrent runs (default: number of slots).
            inline_without_gpus: without GPUs, run the jobs in this process (else as subprocesses, one at a time).
            poll_s: how often running subprocesses are checked.
        """
        if per_gpu < 1:
            raise WMUsageError(f"sweep.launcher.per_gpu must be >= 1, got {per_gpu}")
        self.per_gpu = int(per_gpu)
        self.gpus = _parse_gpu_list(gpus) if isinstance(gpus, str) else (list(map(str, gpus)) if gpus is not None else None)
        self.max_parallel = max_parallel
        self.inline_without_gpus = inline_without_gpus
        self.poll_s = poll_s
        self.assignments: dict[str, str] = {}  # label -> CUDA_VISIBLE_DEVICES it got (inspected by tests)

    def __call__(self, jobs: list[SweepJob]) -> None:
        todo = [j for j in jobs if not j.done]
        gpus = self.gpus if self.gpus is not None else visible_gpus()
        if not gpus:
            for job in todo:
                if self.inline_without_gpus and job.run_inline is not None:
                    job.run_inline()
                else:
                    _run_blocking(job, None)
            return
        slots = gpu_slots(gpus, self.per_gpu)
        if self.max_parallel:
            slots = slots[: max(1, int(self.max_parallel))]
        self._run_parallel(todo, slots)

    def _run_parallel(self, jobs: list[SweepJob], slots: list[str]) -> None:
        free = list(slots)
        queue = list(jobs)
        running: list[tuple[SweepJob, subprocess.Popen, str, object]] = []
        failed: list[str] = []
        try:
            while queue or running:
                while queue and free:
                    job, gpu = queue.pop(0), free.pop(0)
                    self.assignments[job.label] = gpu
                    proc, log = _start(job, gpu)
                    running.append((job, proc, gpu, log))
                still = []
                for job, proc, gpu, log in running:
                    if proc.poll() is None:
                        still.append((job, proc, gpu, log))
                        continue
                    log.close()
                    free.insert(0, gpu)  # reuse the slot that just freed (keeps GPUs evenly loaded)
                    if proc.returncode != 0:
                        failed.append(f"{job.label} (exit {proc.returncode}, log {job.path / 'launcher.log'})")
                running = still
                if running:
                    time.sleep(self.poll_s)
        finally:
            for _, proc, _, log in running:  # interrupted: do not leave orphans behind
                proc.terminate()
                proc.wait()
                log.close()
        if failed:
            raise WMRuntimeError(f"sweep runs failed: {'; '.join(failed)}")


def _start(job: SweepJob, gpu: str | None):
    env = dict(os.environ, **job.env)
    env.pop("WM_FAKE_GPUS", None)  # the child sees exactly the one GPU it was given
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    job.path.mkdir(parents=True, exist_ok=True)
    log = open(job.path / "launcher.log", "ab")
    return subprocess.Popen(job.argv, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _run_blocking(job: SweepJob, gpu: str | None) -> None:
    proc, log = _start(job, gpu)
    try:
        rc = proc.wait()
    finally:
        log.close()
    if rc != 0:
        raise WMRuntimeError(f"sweep run {job.label} failed (exit {rc}); log: {job.path / 'launcher.log'}")


def resolve_launcher(table: dict | None):
    """The launcher a recipe's ``sweep.launcher`` table names (built-in ``local`` when unregistered)."""
    table = dict(table or {"type": "local"})
    name = table.pop("type", "local")
    from wm_framework.plugins import get_registry

    reg = get_registry()
    if name in reg.names("launchers"):
        return reg.create("launchers", name, **table)
    if name == "local":  # the entry point may not be installed yet (editable checkouts)
        return LocalLauncher(**table)
    raise WMUsageError(f"sweep.launcher.type: unknown launcher '{name}'; registered: "
                       f"{', '.join(sorted(set(reg.names('launchers')) | {'local'}))}")


def check_launcher(table: dict | None) -> None:
    """Validate ``sweep.launcher`` before any directory is made."""
    table = dict(table or {"type": "local"})
    name = table.pop("type", "local")
    from wm_framework.plugins import get_registry

    reg = get_registry()
    if name in reg.names("launchers"):
        comp = reg.get("launchers", name)
        comp.check_params(table)
        from wm_framework.registry import resolved

        validate = getattr(resolved(comp.factory), "validate", None)
        if validate is not None:
            validate(**table)
    elif name == "local":
        import inspect

        known = set(inspect.signature(LocalLauncher).parameters)
        unknown = sorted(set(table) - known)
        if unknown:
            raise WMUsageError(f"sweep.launcher: launcher 'local': unknown parameter {', '.join(unknown)}; "
                               f"accepted: {', '.join(sorted(known))}")
    else:
        resolve_launcher({"type": name})  # raises the listing error
