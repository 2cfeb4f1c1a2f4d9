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
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from wm_framework.stops import DISK_FULL

#: Suffix of a directory being populated before its rename (see :func:`atomic_directory`).
CREATING_SUFFIX = ".creating"


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
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        full = next((x for x in (e, e.__context__) if isinstance(x, OSError) and x.errno in DISK_FULL), None)
        if full is not None and (full is not e or not e.filename):
            # torch.save hides a short write as "RuntimeError: ... unexpected pos" (and a raw
            # write names no file): say what it was and which file
            raise OSError(full.errno, os.strerror(full.errno), str(path)) from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Populate a new directory that appears at ``final`` complete or not at all.

    Yields a hidden temporary sibling (``.<name>.XXXX.creating``, mode as ``mkdir`` under
    the umask gives); when the block ends without error it is renamed to ``final``, which
    must not exist or be an empty directory. A kill at any instant leaves ``final`` absent
    or complete; what it leaves behind is a ``.creating`` sibling that
    :func:`remove_stale_creations` removes. Why: a store or run directory half-created by
    a kill used to be unopenable for good (its re-run opened it strictly, and failed).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=CREATING_SUFFIX, dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        os.rename(tmp, final)  # atomic; refuses a non-empty target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_creations(final: str | Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove the ``.creating`` siblings an interrupted :func:`atomic_directory` left for
    ``final`` (for every name in its folder when ``final``'s name is ``*``).

    The caller must know nobody is creating ``final`` right now (it holds the lock), or
    pass ``older_than_s`` longer than any creation takes.
    """
    final = Path(final)
    gone: list[Path] = []
    if not final.parent.is_dir():
        return gone
    now = time.time()
    for p in final.parent.glob(f".{final.name}.*{CREATING_SUFFIX}"):
        try:
            if p.is_dir() and not p.is_symlink() and now - p.lstat().st_mtime >= older_than_s:
                shutil.rmtree(p)
                gone.append(p)
        except OSError:
            pass
    return gone


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
