"""Atomic checkpoints, loaded with ``weights_only=True``.

A checkpoint is written to a temporary file in the same directory, fsynced, then
renamed over the target, so a crash leaves either the old file or the new one, never
half of one. Loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from wm_framework.errors import WMUsageError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save ``state`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; anything else (a pickle payload) is refused."""
    path = Path(path)
    if not path.is_file():
        raise WMUsageError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError on truncation, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WMUsageError(f"{path}: not a loadable checkpoint (weights_only): {first}") from e


def load_state_dict_strict(module: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict with an error naming the mismatched keys instead of a wall of text."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if shape:
            parts.append(f"shape mismatch {_few(shape)}")
        raise WMUsageError(f"{source}: checkpoint does not fit this model: {'; '.join(parts)}")
    module.load_state_dict(state)


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
