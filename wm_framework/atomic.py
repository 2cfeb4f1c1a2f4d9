"""Atomic file writes that respect the umask, without importing torch.

A file is written to a temporary file in the same directory, fsynced, given the mode
an ordinary ``open(path, "w")`` would give it (``0o666 & ~umask``), then renamed over
the target: a crash leaves the old file or the new one, never half of one.

Why the chmod: ``tempfile.mkstemp`` creates files with mode 0600 whatever the umask,
so without it every report, checkpoint and resolved recipe would be unreadable to
lab-mates on shared storage.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore (not thread-safe, brief)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(fileobj)`` to a temp file in the same directory, fsync, set
    the umask's mode, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_png(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file + rename, umask respected)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return Path(path)


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)
