"""A run's trackers (TensorBoard, Weights & Biases) behind one object: ``ctx.tracker``.

Training and the stages share it, so a run's numbers, tables, plots and videos meet in
one TensorBoard log and one W&B run:

* the trainer logs its scalars, image strips and rollout videos through
  ``MetricsLogger`` (``metrics.jsonl`` stays the record) to :meth:`Tracker.log_scalars`,
  :meth:`Tracker.log_image` and :meth:`Tracker.log_video`;
* every ``ctx.update_results(key, value)`` (eval, probes, plan, surprise, ...) goes to
  :meth:`Tracker.log_results`: numbers as W&B summary values and TensorBoard scalars,
  and tables (``result_tables.py``) to W&B;
* every ``ctx.write_report_section`` logs the figures that are new since the last time:
  PNGs under ``plots/`` as images, MP4s under ``videos/`` as videos (GIFs are the MP4s'
  twins and are left out).

``trackers.json`` in the run directory keeps the W&B run id, so that ``wm run --resume``
and later ``wm eval RUN`` continue the same W&B run, and what has been logged (path and
modification time), so that no process logs a figure twice.

Only rank 0 of a distributed job tracks; a tracker with no backend does nothing. A
failure to log is a warning, never the end of a run: results.json and the files are the
record.
"""

from __future__ import annotations

import atexit
import json
import warnings
from pathlib import Path
from typing import Any

from wm_framework.atomic import atomic_write_json

STATE_FILE = "trackers.json"
MEDIA_DIRS = ("plots", "videos")  # RunContext's figure directories (plots_dir, videos_dir)
MEDIA_KINDS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".mp4": "video"}


class Tracker:
    """Fans every call out to the run's backends (``tracker_backends.py``)."""

    def __init__(self, run_dir: str | Path, backends: list | None = None, state: dict | None = None, step: int = 0):
        self.run_dir = Path(run_dir)
        self.backends = list(backends or [])
        self.state = state if state is not None else {}
        self.step = int(step)  # the training step stage results are logged at (TensorBoard's x-axis)
        self._closed = False
        if self.backends:
            atexit.register(self.close)  # a stage command that never closes still flushes

    @property
    def active(self) -> bool:
        return bool(self.backends) and not self._closed

    # -- training ------------------------------------------------------------------------
    def log_scalars(self, record: dict) -> None:
        """One metrics record (``step`` and numbers; other values go to W&B only)."""
        if not self.active:
            return
        step = int(record.get("step", self.step))
        self.step = max(self.step, step)
        numbers = {k: v for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for b in self.backends:
            values = numbers if b.name == "TensorBoard" else {k: v for k, v in record.items() if k != "step"}
            self._guard(b, "scalars", b.scalars, values, step)

    def log_image(self, tag: str, image, step: int, path: Path | None = None) -> None:
        """An RGB uint8 image [H, W, 3] (already written to ``path``, if given)."""
        if self.active:
            for b in self.backends:
                self._guard(b, "an image", b.image, tag, image, step, path)
            self._mark(path)

    def log_video(self, tag: str, frames, step: int, fps: int, path: Path | None = None) -> None:
        """RGB uint8 frames [T, H, W, 3] (already written to ``path`` as MP4, if given)."""
        if self.active:
            for b in self.backends:
                self._guard(b, "a video", b.video, tag, frames, step, fps, path)
            self._mark(path)

    # -- stages --------------------------------------------------------------------------
    def log_results(self, key: str, value: Any) -> None:
        """A stage's results (what it records under ``key`` in results.json)."""
        if not self.active:
            return
        from wm_framework.runs.result_tables import numeric_leaves, result_tables

        scalars, tables = numeric_leaves(value), result_tables(value)
        for b in self.backends:
            self._guard(b, f"the {key} results", b.results, key, scalars, tables, self.step)
        self.flush()

    def log_new_media(self) -> list[str]:
        """Log the plots and videos written or rewritten since they were last logged; returns
        their paths relative to the run directory."""
        if not self.active:
            return []
        logged = self.state.setdefault("media", {})
        new = []
        for folder in MEDIA_DIRS:
            d = self.run_dir / folder
            for path in sorted(d.rglob("*")) if d.is_dir() else []:
                kind = MEDIA_KINDS.get(path.suffix.lower())
                if kind is None or path.name.startswith(".") or path.is_symlink() or not path.is_file():
                    continue  # GIF twins, temp files of atomic writes, links out of the run
                rel = path.relative_to(self.run_dir).as_posix()
                try:
                    mtime = path.stat().st_mtime_ns
                except OSError:  # removed meanwhile
                    continue
                if logged.get(rel) == mtime:
                    continue
                for b in self.backends:
                    self._guard(b, rel, b.media_file, rel.rsplit(".", 1)[0], path, kind, self.step)
                logged[rel] = mtime
                new.append(rel)
        if new:
            self.save_state()
            self.flush()
        return new

    # -- bookkeeping ---------------------------------------------------------------------
    def _mark(self, path: Path | None) -> None:
        """A file logged by the trainer is not logged again by :meth:`log_new_media`."""
        if path is None:
            return
        try:
            rel = Path(path).resolve().relative_to(self.run_dir.resolve()).as_posix()
            mtime = Path(path).stat().st_mtime_ns
        except (ValueError, OSError):  # outside the run directory (never scanned), or gone
            return
        self.state.setdefault("media", {})[rel] = mtime
        self.save_state()

    def save_state(self) -> None:
        atomic_write_json(self.run_dir / STATE_FILE, self.state)

    def _guard(self, backend, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - a tracker is never worth a run
            warnings.warn(f"{backend.name}: could not log {what} ({type(e).__name__}: {e}); "
                          "results.json and the run directory keep it", RuntimeWarning, stacklevel=3)

    def flush(self) -> None:
        for b in self.backends:
            self._guard(b, "(flush)", b.flush)

    def close(self, failed: bool = False) -> None:
        """Flush and close every backend (idempotent; also run at exit); ``failed`` marks the
        W&B run as failed."""
        if self._closed:
            return
        self._closed = True
        for b in self.backends:
            self._guard(b, "(close)", b.close, failed)


def load_state(run_dir: Path) -> dict:
    f = Path(run_dir) / STATE_FILE
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged bookkeeping file costs a new W&B run id, never the run


def run_name(run_dir: Path, label: str = "") -> str:
    """The W&B run name: the run directory's name (``<timestamp>_<recipe>[_<preset>]``, unique
    in its folder), ``<sweep directory>/<label>`` for a run of a sweep."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == "sweep":
        return f"{run_dir.parent.parent.name}/{label or run_dir.name}"
    return run_dir.name


def sweep_group(run_dir: Path) -> str | None:
    """The W&B group of a sweep's runs (and of the sweep itself): the sweep directory's name."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == "sweep":
        return run_dir.parent.parent.name
    return run_dir.name if (run_dir / "sweep").is_dir() else None


def resolved_config(ctx) -> dict:
    """The recipe the run wrote (recipe.resolved.toml: defaults and resume overrides included)."""
    from wm_framework.recipe import load_toml

    f = ctx.path / "recipe.resolved.toml"
    return load_toml(f) if f.is_file() else dict(ctx.recipe.raw)


def open_tracker(ctx) -> Tracker:
    """The run's tracker, with the backends its recipe turns on (``train.tensorboard``,
    ``[train.wandb]``); a tracker with none on ranks other than 0."""
    from wm_framework.train import distributed

    if not distributed.current().is_main:
        return Tracker(ctx.path)
    from wm_framework.runs.tracker_backends import TensorBoardBackend, WandbBackend

    cfg = ctx.recipe.train
    backends: list = []
    state = load_state(ctx.path)
    if cfg.tensorboard:
        tb = TensorBoardBackend.open(ctx.path / "tensorboard")
        if tb is not None:
            backends.append(tb)
    if cfg.wandb is not None:
        wb = state.setdefault("wandb", {})
        wb.setdefault("id", _new_id())
        wb["name"] = run_name(ctx.path, ctx.label)
        atomic_write_json(ctx.path / STATE_FILE, state)  # the id first: a crash in init keeps it for the resume
        backends.append(WandbBackend.open(cfg.wandb, ctx.path, wb["name"], sweep_group(ctx.path),
                                          resolved_config(ctx), wb["id"]))
    step = (ctx.results().get("train") or {}).get("global_step") or 0
    return Tracker(ctx.path, backends, state, step)


def _new_id() -> str:
    """A W&B-style run id (8 lowercase letters and digits)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
