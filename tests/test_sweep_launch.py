"""Sweep launchers: sequential on CPU, one process per GPU slot with (faked) GPUs, plugin registration."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import run_wm

# A stand-in job: records which GPU it was given and when it ran, then marks itself DONE.
JOB = r"""
import json, os, sys, time
path = sys.argv[1]
t0 = time.time(); time.sleep(float(sys.argv[2])); t1 = time.time()
json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "fake": os.environ.get("WM_FAKE_GPUS"), "t0": t0, "t1": t1},
          open(os.path.join(path, "job.json"), "w"))
if sys.argv[3] == "ok":
    open(os.path.join(path, "DONE"), "w").close()
sys.exit(0 if sys.argv[3] == "ok" else 3)
"""


def _jobs(tmp_path: Path, n: int, seconds: float = 0.6, fail: set[int] = frozenset()):
    from wm_framework.runs.launchers import SweepJob

    jobs = []
    for i in range(n):
        p = tmp_path / f"job{i}"
        p.mkdir()
        argv = [sys.executable, "-c", JOB, str(p), str(seconds), "fail" if i in fail else "ok"]
        jobs.append(SweepJob(f"job{i}", p, argv))
    return jobs


def test_gpu_list_parsing_and_slots():
    from wm_framework.runs.launchers import gpu_slots, visible_gpus

    assert visible_gpus({"WM_FAKE_GPUS": "2"}) == ["0", "1"]
    assert visible_gpus({"WM_FAKE_GPUS": "0,3"}) == ["0", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "4,5"}) == ["4", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_slots(["0", "1"], 2) == ["0", "1", "0", "1"]  # spread first, then pack


def test_local_launcher_spreads_and_packs_runs_over_fake_gpus(tmp_path, monkeypatch):
    from wm_framework.runs.launchers import LocalLauncher

    monkeypatch.setenv("WM_FAKE_GPUS", "2")
    jobs = _jobs(tmp_path, 5)
    launcher = LocalLauncher(per_gpu=2, poll_s=0.05)
    launcher(jobs)
    records = [json.loads((j.path / "job.json").read_text()) for j in jobs]
    assert all(j.done for j in jobs)
    assert [r["gpu"] for r in records] == [launcher.assignments[j.label] for j in jobs]
    assert {r["gpu"] for r in records} == {"0", "1"}
    assert all(r["fake"] is None for r in records)  # children see only their CUDA_VISIBLE_DEVICES
    # The first four start together (2 GPUs x 2 slots), the fifth waits for a free slot.
    first = sorted(records[:4], key=lambda r: r["t0"])
    assert max(r["t0"] for r in records[:4]) < min(r["t1"] for r in records[:4])
    assert records[4]["t0"] >= min(r["t1"] for r in first) - 0.05
    for gpu in ("0", "1"):  # never more than per_gpu at once on one GPU
        spans = [(r["t0"], r["t1"]) for r in records if r["gpu"] == gpu]
        for t, _ in spans:
            assert sum(a <= t < b for a, b in spans) <= 2


def test_local_launcher_one_per_gpu_and_failures_are_named(tmp_path, monkeypatch):
    from wm_framework.errors import WMRuntimeError
    from wm_framework.runs.launchers import LocalLauncher

    monkeypatch.setenv("WM_FAKE_GPUS", "0,3")
    jobs = _jobs(tmp_path, 3, seconds=0.3, fail={1})
    with pytest.raises(WMRuntimeError, match="job1"):
        LocalLauncher(per_gpu=1, poll_s=0.05)(jobs)
    assert [j.done for j in jobs] == [True, False, True]
    assert {json.loads((j.path / "job.json").read_text())["gpu"] for j in jobs} <= {"0", "3"}
    assert (jobs[1].path / "launcher.log").is_file()


def test_without_gpus_jobs_run_inline_in_sequence(tmp_path, monkeypatch):
    from wm_framework.runs.launchers import LocalLauncher, SweepJob

    monkeypatch.delenv("WM_FAKE_GPUS", raising=False)
    order = []
    jobs = [SweepJob(f"r{i}", tmp_path, ["false"], run_inline=lambda i=i: order.append(i)) for i in range(3)]
    LocalLauncher(gpus=[])(jobs)
    assert order == [0, 1, 2]


def test_launchers_register_through_the_hook_and_recipe_table_resolves(tmp_path):
    from wm_framework.errors import WMUsageError
    from wm_framework.runs.launchers import LocalLauncher, check_launcher, resolve_launcher
    from wm_framework.plugins import get_registry

    reg = get_registry()
    assert reg.get("launchers", "local").plugin == "core"  # registered by the core's entry point, like a plugin
    launcher = resolve_launcher({"type": "local", "per_gpu": 3})
    assert isinstance(launcher, LocalLauncher) and launcher.per_gpu == 3
    with pytest.raises(WMUsageError, match="per_gpus"):
        check_launcher({"type": "local", "per_gpus": 2})
    with pytest.raises(WMUsageError, match="unknown launcher 'ray'"):
        check_launcher({"type": "ray"})


SWEEP = """
name = "sweep_toy"
seed = 0
stages = ["data", "train"]
[data]
train = "{store}"
window = 3
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 20 }}
policies = [{{ type = "random" }}]
episodes = 4
[model]
encoder = {{ type = "mlp", latent_dim = 4, hidden = 8 }}
predictor = {{ type = "mlp", hidden = 8 }}
[model.losses.pred]
type = "mse"
[train]
steps = 4
batch_size = 4
eval_every = 2
checkpoint_every = 2
threads = 1
tensorboard = false
[sweep]
grid = {{ "train.lr" = [1e-3, 3e-3] }}
launcher = {{ type = "local", per_gpu = 2 }}
"""


def test_sweep_runs_as_gpu_pinned_subprocesses_with_fake_gpus(tmp_path):
    recipe = tmp_path / "s.toml"
    recipe.write_text(SWEEP.format(store=str(tmp_path / "toy.zarr")))
    # The store does not exist: the parent collects it once before the two runs start together.
    t0 = time.time()
    r = run_wm("run", str(recipe), "--out", str(tmp_path / "runs"), cwd=tmp_path, env={"WM_FAKE_GPUS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = list((tmp_path / "runs").iterdir())
    subs = sorted((run / "sweep").iterdir())
    assert [p.name for p in subs] == ["lr=0.001", "lr=0.003"]
    for sub in subs:
        assert (sub / "DONE").is_file() and (sub / "checkpoints" / "last.safetensors").is_file()
        assert (sub / "launcher.log").is_file()  # it ran as a subprocess, output captured per run
    res = json.loads((run / "results.json").read_text())["sweep"]
    assert set(res) == {"lr=0.001", "lr=0.003"} and all(v["global_step"] == 4 for v in res.values())
    assert "Sweep runs" in (run / "report.md").read_text()
    assert time.time() - t0 < 120
