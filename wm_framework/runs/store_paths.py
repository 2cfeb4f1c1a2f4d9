"""Where a run's episode stores live, independent of the directory a later command runs in.

A recipe names its stores relative to the directory ``wm run`` starts in
(``data/toy_ball.zarr``). ``wm eval RUN``, ``wm probe RUN`` or ``load_run(RUN)`` in a
notebook usually run somewhere else, so the run directory records the absolute paths
once, in ``stores.json``, while the relative ones still mean what the recipe meant:
when the data stage starts (before it builds anything) or, for runs without one, when
the stores are first opened. Every later :func:`~wm_framework.runs.context.load_run` reads them
back. ``--data`` / ``--test-data`` (:func:`use_stores`) point one command at other
stores without touching the record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wm_framework.atomic import atomic_write_json
from wm_framework.errors import WMUsageError

STORES_FILE = "stores.json"


def absolute(path: str | None) -> str | None:
    """A local path made absolute against the current directory; URLs and None unchanged."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


def record_store_paths(ctx) -> None:
    """Write ``stores.json`` (absolute train/test paths) unless the run already has one.

    Call only where the current directory is the one the recipe's paths were meant for:
    inside ``wm run`` (the data stage, or the first opening of the stores).
    """
    d = ctx.recipe.data
    target = Path(ctx.path) / STORES_FILE
    if d is None or target.is_file():
        return
    atomic_write_json(target, {"train": absolute(d.train), "test": absolute(d.test),
                               "recipe": {"train": d.train, "test": d.test}})
    _set_paths(ctx, absolute(d.train), absolute(d.test))


def apply_store_paths(ctx) -> None:
    """Point ``ctx`` at the absolute paths its ``stores.json`` recorded (no file: unchanged).

    A record made for other recipe paths (the resolved recipe was edited since) is ignored.
    """
    d = ctx.recipe.data
    f = Path(ctx.path) / STORES_FILE
    if d is None or not f.is_file():
        return
    try:
        rec = json.loads(f.read_text())
        recorded_for = rec["recipe"]
        train, test = rec["train"], rec["test"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WMUsageError(f"{f}: unreadable store record ({type(e).__name__}); delete it to use the recipe's paths") from e
    if recorded_for == {"train": d.train, "test": d.test}:
        _set_paths(ctx, train, test)


def use_stores(ctx, train: str | None = None, test: str | None = None) -> None:
    """Use other stores for this context only (``--data`` / ``--test-data``); each must exist."""
    for option, path in (("--data", train), ("--test-data", test)):
        if path is not None and "://" not in str(path) and not Path(path).exists():
            raise WMUsageError(f"{option} {path}: no such store")
    if ctx.recipe.data is None:
        raise WMUsageError("--data/--test-data: this run's recipe has no [data] section")
    _set_paths(ctx, absolute(str(train)) if train is not None else ctx.recipe.data.train,
               absolute(str(test)) if test is not None else ctx.recipe.data.test)


def _set_paths(ctx, train: str, test: str | None) -> None:
    data = ctx.recipe.data.model_copy(update={"train": train, "test": test})
    ctx.recipe = ctx.recipe.model_copy(update={"data": data})
    ctx._stores = ctx._splits = None  # opened again from the new paths
