"""Advisory locks: one writer per store, one trainer per run directory.

Two ``wm data collect`` into one store interleave their appends and corrupt it; two
``wm run --resume`` on one run both train and log every step twice. ``exclusive(path)``
takes an ``fcntl.flock`` on a lock file and records the holder's PID in it; a second
writer gets a one-line ``WMUsageError`` (exit 2) naming that PID.

The lock is the kernel's, not the file's: it is released when the holder exits, however
it exits (SIGKILL included), so a lock file left by a killed process is simply taken
over; the PID written in it is only for the message. Stores lock a sibling file
(``.<name>.wm-lock`` next to the store: the store directory may not exist yet, or be
created by a rename); run directories lock ``.wm-lock`` inside. Remote stores
(``s3://...``) and platforms without ``fcntl`` are not locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from wm_framework.errors import WMUsageError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None  # type: ignore[assignment]


def store_lock_file(store: str | os.PathLike) -> Path | None:
    """The lock file guarding a local store (None for a URL)."""
    text = os.fspath(store)
    if "://" in text:
        return None
    path = Path(text).resolve()
    return path.parent / f".{path.name}.wm-lock"


def run_lock_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / ".wm-lock"


@contextmanager
def exclusive(lock_file: Path | None, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_file`` for the block; ``what`` names the
    guarded thing in the error ("store data/x.zarr")."""
    if lock_file is None or fcntl is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise WMUsageError(f"{what} is in use by process {holder} (lock {lock_file}); wait for it to "
                               "finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
