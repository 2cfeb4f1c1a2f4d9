"""Stopping early says so in one line, with how to go on (issue 25, point 6).

Before: Ctrl-C printed nothing (Typer turned the KeyboardInterrupt into exit 130 before
the CLI's line), SIGTERM had no handler (with workers: "12 leaked semaphore objects"),
and a full disk during training said ``RuntimeError: [enforce fail at
inline_container.cc:672] unexpected pos ...``. Real processes and real signals here.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _reliability_util import non_progress_lines, tiny_recipe
from wm_framework.cli import main as wm_main
from wm_framework.data.inspect import validate_store

WM = [sys.executable, "-m", "wm_framework.cli"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # Its own process group (Ctrl-C goes to the group, as from a terminal), and SIGINT at its
    # default: a test runner started in the background (nohup, `&`) passes SIGINT down ignored,
    # and Python then never turns it into KeyboardInterrupt, as it should not.
    return subprocess.Popen(WM + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not list(root.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{pattern} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_says_so_in_one_line_with_the_resume_command(tmp_path, capsys, sig):
    recipe = tiny_recipe(tmp_path, steps=100_000)
    proc = _start(["run", str(recipe), "--out", "runs"], tmp_path)
    _wait_for("runs/*/checkpoints/last.safetensors", tmp_path, proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what Ctrl-C in a terminal does
    else:
        proc.send_signal(sig)  # what kill, SLURM or a container runtime does
    _, err = proc.communicate(timeout=60)
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    lines = non_progress_lines(err)
    word = "interrupted" if sig == signal.SIGINT else "stopped by SIGTERM"
    assert proc.returncode == 128 + sig, err
    assert lines == [f"{word}; resume with: wm run --resume runs/{run.name}"], err
    from wm_framework.locks import exclusive, run_lock_file

    with exclusive(run_lock_file(run), "run"):  # released: `wm run --resume` can take it
        pass
    assert (run / "checkpoints" / "last.safetensors").is_file()
    import json

    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"  # run.json says how it ended
    assert (run / "run.log").read_text().splitlines()[-1].endswith(f"wm_framework: {word}")  # and so does run.log


def test_sigterm_stops_collection_workers_cleanly(tmp_path):
    proc = _start(["data", "collect", "--env", "bouncing_ball", "--policy", "random", "--episodes", "400",
                   "--max-steps", "60", "--workers", "2", "--out", "s.zarr"], tmp_path)
    _wait_for("s.zarr/episodes/ends/c/0", tmp_path, proc)  # a commit happened: workers are busy
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = [x for x in err.splitlines() if x.strip() and "collect" not in x]
    assert proc.returncode == 143, err
    assert lines == ["stopped by SIGTERM; run the same command again to continue: committed episodes are kept"], err
    assert "leaked" not in err and "Traceback" not in err
    assert validate_store(tmp_path / "s.zarr") == []
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not children  # no worker outlived its parent


class FullDisk:
    """A file whose every write fails as on a full disk (the rest passes through)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_full_disk_while_checkpointing_is_named_with_how_to_resume(tmp_path, monkeypatch, capsys):
    """A short write of the trainer state (the 3rd checkpoint) is one line naming the file the
    user knows (last.trainer.pt, not its pending name) and how to resume; nothing half-written stays."""
    from wm_framework import atomic

    recipe = tiny_recipe(tmp_path, steps=6)
    real_fdopen, calls = os.fdopen, {"n": 0}

    def fdopen(fd, *a, **kw):
        f = real_fdopen(fd, *a, **kw)
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith("..last.trainer.pt.pending."):
            calls["n"] += 1
            if calls["n"] == 3:
                return FullDisk(f)
        return f

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    code = wm_main(["run", str(recipe), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    monkeypatch.undo()
    run = next((tmp_path / "runs").iterdir())
    errors = [x for x in err.splitlines() if x.startswith("error")]
    assert code == 1 and "Traceback" not in err, err
    assert errors == [f"error: no space left on device while writing {run / 'checkpoints' / 'last.trainer.pt'}; "
                      f"free some space, then resume with: wm run --resume {run}"], err
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_full_disk_inside_torch_save_names_the_file():
    """torch.save hides a short write as RuntimeError('... unexpected pos ...'), the OSError only
    in its context: an atomic write through it still raises the OSError naming the file."""
    import tempfile

    import torch
    from wm_framework.atomic import atomic_write
    from wm_framework.stops import describe_stop

    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "state.pt"
        with pytest.raises(OSError) as err:
            atomic_write(target, lambda f: torch.save({"x": torch.zeros(1000)}, FullDisk(f)))
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
        assert describe_stop(err.value).line.startswith(f"error: no space left on device while writing {target}")
        assert os.listdir(d) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk (needs root and mount; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_really_full_disk_during_collection_is_one_line(tiny_disk, tmp_path, workers):
    proc = _start(["data", "collect", "--env", "bouncing_ball", "--policy", "random", "--episodes", "300",
                   "--max-steps", "100", "--workers", workers, "--out", str(tiny_disk / "s.zarr")], tmp_path)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip() and "collect" not in x]
    assert proc.returncode == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device"), err
    assert "Task was destroyed" not in err and "Traceback" not in err and "leaked" not in err
