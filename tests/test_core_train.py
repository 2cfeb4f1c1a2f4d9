"""The trainer end to end: a real store on disk, kill -9 and exact resume, NaN handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import run_wm

RECIPE = """
name = "toy_state"
seed = 3
stages = ["data", "train"]
[data]
train = "{store}"
window = 4
frameskip = 2
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 40 }}
policies = [{{ type = "random" }}]
episodes = 8
[model]
encoder = {{ type = "mlp", latent_dim = 8, hidden = 32 }}
predictor = {{ type = "mlp", hidden = 32 }}
[model.losses.pred]
type = "mse"
[model.losses.aux]
type = "huber"
weight = 0.5
[train]
steps = {steps}
batch_size = 16
lr = 3e-3
eval_every = 10
checkpoint_every = {ckpt}
log_every = 5
threads = 1
"""


def _recipe(tmp_path: Path, steps: int = 60, ckpt: int = 5, name: str = "r.toml") -> Path:
    f = tmp_path / name
    f.write_text(RECIPE.format(store=str(tmp_path / "toy.zarr"), steps=steps, ckpt=ckpt))
    return f


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / "last.safetensors")


def _only_run(parent: Path) -> Path:
    runs = sorted(parent.iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_run_directory_layout_and_metrics(tmp_path):
    r = run_wm("run", str(_recipe(tmp_path, steps=20)), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = _only_run(tmp_path / "runs")
    for name in ("recipe.resolved.toml", "metrics.jsonl", "report.md", "results.json", "run.json", "run.log",
                 "checkpoints/last.safetensors", "checkpoints/best.safetensors", "checkpoints/last.trainer.pt"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in run.glob("checkpoints/*.pt")) == ["last.trainer.pt"]  # the optimizer once, for resume
    # Validation reaches the console (stderr) and run.log, each evaluation.
    val_lines = [x for x in r.stderr.splitlines() if "validation: loss" in x]
    assert len(val_lines) >= 2 and val_lines[-1].startswith("step 20/20 validation: loss "), r.stderr
    log = (run / "run.log").read_text()
    assert "stage train" in log and "step 20/20 validation: loss" in log and "step 20/20 loss" in log
    meta = json.loads((run / "run.json").read_text())
    assert meta["git_revision"] and "blocks" in meta["plugins"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in records if "loss" in x]
    assert [x["step"] for x in train] == [5, 10, 15, 20]
    assert {"grad_norm", "lr", "samples_per_s", "train/pred", "train/aux"} <= set(train[0])
    assert any("val/loss" in x for x in records)
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    res = json.loads((run / "results.json").read_text())["train"]
    assert res["global_step"] == 20 and res["best_step"] > 0
    assert res["precision"] == "fp32" and res["precision_reason"].startswith("auto")  # conftest: WM_CPU_BF16=0


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    recipe = _recipe(tmp_path, steps=60, ckpt=5)
    ref = run_wm("run", str(recipe), "--out", str(tmp_path / "ref"), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    ref_dir = _only_run(tmp_path / "ref")

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "wm_framework.cli", "run", str(recipe), "--out", str(tmp_path / "killed")],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        idx = list((tmp_path / "killed").glob("*/checkpoints/index.json"))
        if idx:
            steps = [e["step"] for e in json.loads(idx[0].read_text()) if e["label"] == "last"]
            if steps and steps[0] >= 15:
                proc.send_signal(signal.SIGKILL)
                killed_at = steps[0]
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None and killed_at < 60, "the run finished before it could be killed"
    run_dir = _only_run(tmp_path / "killed")
    r = run_wm("run", "--resume", str(run_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = _weights(ref_dir), _weights(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logged = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert logged(ref_dir)[-1]["loss"] == logged(run_dir)[-1]["loss"] and logged(run_dir)[-1]["step"] == 60
    # replayed steps are logged once, with the same values as the uninterrupted run
    assert [x["step"] for x in logged(run_dir)] == [x["step"] for x in logged(ref_dir)]
    assert [x["loss"] for x in logged(run_dir)] == [x["loss"] for x in logged(ref_dir)]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_nan_loss_stops_with_step_and_term_and_keeps_checkpoint(tmp_path):
    recipe = _recipe(tmp_path, steps=40, ckpt=1)
    r = run_wm("run", str(recipe), "train.lr=1e30", "train.grad_clip=1e30", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: step ") and "not finite" in line and "Traceback" not in r.stderr
    run = _only_run(tmp_path / "runs")
    state = _weights(run)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_nan_skip_policy_logs_and_finishes(tmp_path):
    recipe = _recipe(tmp_path, steps=12, ckpt=4)
    r = run_wm("run", str(recipe), "train.lr=1e30", "train.grad_clip=1e30", "train.nan_policy=\"skip\"",
               "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = _only_run(tmp_path / "runs")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(x.get("skipped") for x in records)


def test_run_json_records_provenance_and_how_the_run_ended(tmp_path, capsys):
    """run.json: command, versions, device, git state, and a final status (issue 22, point 3)."""
    from wm_framework.cli import main as wm_main

    ok = _recipe(tmp_path, steps=4)
    assert wm_main(["run", str(ok), "--out", str(tmp_path / "runs")]) == 0
    run = _only_run(tmp_path / "runs")
    meta = json.loads((run / "run.json").read_text())
    for key in ("command", "python", "torch", "devices", "host", "git_revision", "git_dirty", "plugins",
                "started", "ended"):
        assert key in meta, key
    assert meta["status"] == "done" and meta["error"] is None and meta["ended"] >= meta["started"]
    import wm_framework

    model = wm_framework.load_run(run).load_model("last")  # the top-level API loads what was trained
    assert not model.training and sum(p.numel() for p in model.parameters()) > 0
    # a run that fails says so, with the one-line error
    bad = tmp_path / "bad"
    bad.mkdir()
    recipe = _recipe(bad, steps=4)
    assert wm_main(["run", str(recipe), "model.predictor.hidden=0", "--out", str(bad / "runs")]) == 2
    meta = json.loads((_only_run(bad / "runs") / "run.json").read_text())
    assert meta["status"] == "failed" and "size parameter is 0" in meta["error"], meta
