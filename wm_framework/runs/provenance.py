"""``run.json``: where a run came from, and how it ended.

Written when the run directory is created (``provenance``) and updated as the run goes
(``run_status``): ``running`` while stages run, then ``done``, ``failed`` with the
one-line error, or ``interrupted`` (Ctrl-C, SIGTERM). Why: a run that failed used to
leave a half-filled directory that looked like any other, and run.json lacked what a
reader needs to reproduce a figure (the command, the versions, the device, whether the
git tree had uncommitted changes).
"""

from __future__ import annotations

import json
import platform
import shlex
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from wm_framework.atomic import atomic_write_json


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def git_state(cwd: Path | None = None) -> tuple[str, bool | None]:
    """(revision, dirty) of the checkout this package runs from; ("unknown", None) outside git."""
    where = cwd or Path(__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not rev:
            return "unknown", None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev, bool(dirty)
    except Exception:  # noqa: BLE001 - git missing, not a checkout, timeout
        return "unknown", None


def environment() -> dict:
    """Python, torch, CUDA/cuDNN and device names of this process."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda
        else [platform.processor() or platform.machine() or "cpu"],
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def command_line() -> str:
    """This process's command line as a shell would take it (``wm run recipes/x.toml ...``)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""


def provenance(label: str = "") -> dict:
    """The run.json of a new run directory."""
    from wm_framework.plugins import get_plugin_manager

    rev, dirty = git_state()
    return {
        "label": label,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command_line(),
        "git_revision": rev + ("+dirty" if dirty else ""),
        "git_dirty": dirty,
        "plugins": get_plugin_manager().versions(),
        "status": "created",
        **environment(),
    }


def _update(run_dir: Path, **fields) -> None:
    f = Path(run_dir) / "run.json"
    try:
        meta = json.loads(f.read_text()) if f.is_file() else {}
    except ValueError:
        meta = {}
    meta.update(fields)
    atomic_write_json(f, meta)


@contextmanager
def run_status(run_dir: Path | None) -> Iterator[None]:
    """Mark ``run_dir``'s run.json running, then done / failed (with the error) / interrupted.
    ``None`` (a rank other than 0 of a distributed job) records nothing."""
    if run_dir is None:
        yield
        return
    _update(run_dir, status="running", started=now(), ended=None, error=None)
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C and SIGTERM (stops.Terminated)
        _update(run_dir, status="interrupted", ended=now())
        raise
    except BaseException as e:
        line = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        _update(run_dir, status="failed", ended=now(), error=line)
        raise
    _update(run_dir, status="done", ended=now())
