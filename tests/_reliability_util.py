"""Fault injection for the reliability tests: a fork server that SIGKILLs real workers.

Python + torch + zarr start in ~2 s, too slow for dozens of kill points. The server
pays that once: it imports everything, then for each request forks a child that runs
the real work (``collect`` or ``run_recipe``) in a real process, waits a chosen
delay and sends SIGKILL. The child has no special hooks: what it leaves on disk is
exactly what a crash of ``wm data collect`` / ``wm run`` would leave.

The server itself never opens a store or trains (no zarr event-loop thread, no torch
thread pool), so forking it is safe; it checks that it is single-threaded before
every fork.

Protocol (one JSON object per line): request ``{"task": "collect"|"run"|"import", "kwargs":
{...}, "kill_after": seconds or null, "kill_when": [globs], "cwd": dir, "log": file}``; reply ``{"killed":
bool, "code": exit code or null, "elapsed": seconds}``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class ForkServer:
    """Client side: start the server once, then ``call(task, kill_after=..., **kwargs)``."""

    def __init__(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        ready = self.proc.stdout.readline()
        assert ready.strip() == "ready", f"fork server failed to start: {ready!r}"

    def call(self, task: str, cwd: Path, log: Path, kill_after: float | None = None,
             kill_when: list[str] | None = None, **kwargs) -> dict:
        """Run ``task`` in a forked child; SIGKILL it after ``kill_after`` seconds or as soon
        as a path matching one of the ``kill_when`` globs exists (polled every ~0.2 ms)."""
        req = {"task": task, "kwargs": kwargs, "kill_after": kill_after, "kill_when": kill_when or [],
               "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "fork server died"
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- server side
def _child(task: str, kwargs: dict) -> None:
    if task == "collect":
        from wm_framework.data.collect import collect

        collect(progress=False, **kwargs)
    elif task == "run":
        from wm_framework.runs.run import run_recipe

        run_recipe(progress=False, **kwargs)
    elif task == "import":
        from wm_framework.data.importers import import_store

        import_store(**kwargs)
    else:
        raise ValueError(task)


def _serve() -> None:
    import numpy  # noqa: F401 - import everything the children need, once
    import torch
    import zarr  # noqa: F401

    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401 - the optimizer imports it lazily (~2 s)
    import wm_framework.data.collect  # noqa: F401
    import wm_framework.data.importers  # noqa: F401
    import wm_framework.runs.run  # noqa: F401
    import wm_framework.train.loop  # noqa: F401
    from wm_framework.plugins import get_plugin_manager

    get_plugin_manager()
    import wm_plugins.blocks.envs  # noqa: F401
    import wm_plugins.blocks.losses  # noqa: F401
    import wm_plugins.blocks.nets  # noqa: F401
    import wm_plugins.blocks.policies  # noqa: F401

    out = sys.stdout
    print("ready", file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if threading.active_count() != 1:
            raise RuntimeError("fork server grew a thread; forking would be unsafe")
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # child: the real work, output to a log file
            code = 0
            try:
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(req["cwd"])
                _child(req["task"], req["kwargs"])
            except BaseException:  # noqa: BLE001 - reported through the exit code and the log
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        status, killed = None, False
        deadline = None if req["kill_after"] is None else t0 + float(req["kill_after"])
        watch = req.get("kill_when") or []
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            seen = any(glob.glob(pattern) for pattern in watch)
            if seen or (deadline is not None and time.perf_counter() >= deadline):
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.0002 if watch else 0.001)
        if os.WIFSIGNALED(status):
            killed, code = os.WTERMSIG(status) == signal.SIGKILL, None
        else:
            code = os.WEXITSTATUS(status)
        print(json.dumps({"killed": killed, "code": code, "elapsed": time.perf_counter() - t0}), file=out, flush=True)


if __name__ == "__main__":
    _serve()


# ----------------------------------------------------------------------------- a tiny real run
TINY_RECIPE = """
name = "tiny"
seed = 0
stages = ["data", "train"]
[data]
train = "{store}"
window = 3
frameskip = 1
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 20 }}
policies = [{{ type = "random" }}]
episodes = 6
[model]
encoder = {{ type = "mlp", latent_dim = {latent}, hidden = 16 }}
predictor = {{ type = "mlp", hidden = 16 }}
[model.losses.pred]
type = "{loss}"
[train]
steps = {steps}
batch_size = 8
lr = 1e-3
eval_every = 2
checkpoint_every = 1
log_every = 1
threads = 1
tensorboard = false
"""


def tiny_recipe(root: Path, name: str = "tiny.toml", latent: int = 8, steps: int = 4, loss: str = "mse") -> Path:
    """A recipe that collects 6 short linear_state episodes and trains a 16-wide MLP for a few steps."""
    root = Path(root)
    f = root / name
    f.write_text(TINY_RECIPE.format(store=root / "tiny.zarr", latent=latent, steps=steps, loss=loss))
    return f


def tiny_run(root: Path, **kw) -> Path:
    """Run tiny_recipe in this process and return its run directory."""
    from wm_framework.runs.run import run_recipe

    return run_recipe(str(tiny_recipe(root, **kw)), out=str(Path(root) / "runs"), progress=False)


def last_state(run: Path, label: str = "last") -> dict:
    """A run's checkpoint as one dict: ``{"model": weights, **trainer state}`` (the trainer
    state exists for ``last`` only), read the way resume reads it."""
    from wm_framework.train.checkpoint import load_resume_state, load_weights_safetensors

    if label != "last":
        return {"model": load_weights_safetensors(Path(run) / "checkpoints" / f"{label}.safetensors")}
    weights, state, _ = load_resume_state(Path(run) / "checkpoints")
    return {"model": weights, **state}


#: What the console says while a command works (wm_framework/console.py): stage headers,
#: training steps and validations, counted work ("collect: episode 6/6 ...").
_PROGRESS = re.compile(r"^(stage \S+|step \d+/\d+ |[\w ]+: \w+ \d+/\d+ )")


def non_progress_lines(err: str) -> list[str]:
    """The non-empty lines of a command's stderr that are not progress lines."""
    return [x for x in err.splitlines() if x.strip() and not _PROGRESS.match(x)]
