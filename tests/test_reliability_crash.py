"""Crash safety by fault injection: real processes SIGKILLed at >= 20 seeded random points.

Each scenario forks its worker from one warm server (tests/_reliability_util.py), so a
kill point costs a fraction of a second instead of a Python + torch start-up. After
every kill the on-disk state is checked as a user would meet it; then the work is
resumed and must reach what an uninterrupted run reaches.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from _reliability_util import ForkServer, last_state
from wm_framework.cli import main as wm_main
from wm_framework.data.inspect import uncommitted_rows, validate_store
from wm_framework.data.store import EpisodeStore
from wm_framework.train.checkpoint import load_weights_safetensors

KILLS = 24  # kill points per scenario (the brief asks for >= 20)


@pytest.fixture(scope="module")
def server():
    fs = ForkServer()
    yield fs
    fs.close()


# ----------------------------------------------------------------------------- data collection
BALL = {"type": "bouncing_ball", "size": 16, "max_steps": 20}
POLICIES = [{"type": "random"}, {"type": "sticky_random"}]


def test_collect_survives_sigkill_at_random_points(server, tmp_path, capsys):
    """After each of 24 kills the store opens with only complete episodes and `wm data validate`
    passes; a final resume tops every policy up to the target with no seed repeated."""
    out = tmp_path / "ball.zarr"
    log = tmp_path / "collect.log"
    rng = random.Random(20240611)
    kills, dirty, seen = 0, 0, []
    for _ in range(KILLS):
        # The target is never reached: every call is cut short by the kill.
        r = server.call("collect", tmp_path, log, kill_after=rng.uniform(0.1, 1.0),
                        out=str(out), env=BALL, policies=POLICIES, episodes=500)
        assert r["killed"], (r, log.read_text()[-2000:] if log.exists() else "")
        kills += 1
        if not (out / "zarr.json").exists():
            continue  # killed before the store existed: nothing to check yet
        store = EpisodeStore.open(out)
        assert validate_store(str(out)) == [], f"kill {kills}: {validate_store(str(out))}"
        assert wm_main(["data", "validate", str(out)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert store.num_episodes >= (seen[-1] if seen else 0), "committed episodes were lost"
        seen.append(store.num_episodes)
        dirty += uncommitted_rows(store) > 0 if store.num_episodes else 0
        n = store.num_frames  # every committed episode is whole: its last row, and only it, is flagged
        done = store.read("terminated", 0, n) | store.read("truncated", 0, n)
        assert np.array_equal(np.flatnonzero(done), store.episode_ends - 1)
    assert kills >= 20 and seen and seen[-1] > 0
    assert dirty > 0, "no kill landed inside an append; the recovery path was not exercised"

    target = max(int((EpisodeStore.open(out).episode_policy == p["type"]).sum()) for p in POLICIES) + 2
    r = server.call("collect", tmp_path, log, out=str(out), env=BALL, policies=POLICIES, episodes=target)
    assert r["code"] == 0, log.read_text()[-2000:]
    store = EpisodeStore.open(out)
    counts = {p: int((store.episode_policy == p).sum()) for p in store.policies()}
    assert counts == {"random": target, "sticky_random": target}
    assert validate_store(str(out)) == [] and uncommitted_rows(store) == 0
    for p in store.policies():  # resuming never repeats an episode seed
        seeds = store.episode_seed[store.episode_policy == p]
        assert len(set(seeds.tolist())) == len(seeds)


# ----------------------------------------------------------------------------- training
TRAIN_RECIPE = """
name = "crashy"
seed = 1
stages = ["data", "train"]
[data]
train = "{store}"
window = 3
frameskip = 1
val_fraction = 0.25
[model]
encoder = {{ type = "mlp", latent_dim = 16, hidden = 128 }}
predictor = {{ type = "mlp", hidden = 128 }}
[model.losses.pred]
type = "mse"
[train]
steps = {steps}
batch_size = 16
lr = 1e-3
eval_every = 7
checkpoint_every = 1
checkpoint_epochs = [1, 2]
log_every = 10
threads = 1
tensorboard = false
"""


def _only(parent: Path) -> Path:
    runs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _check_run_dir_intact(run: Path) -> None:
    """What a user finds after a crash: every checkpoint loads (weights_only), every JSON parses."""
    ckpts = run / "checkpoints"
    for f in ckpts.glob("*.safetensors"):
        assert load_weights_safetensors(f), f  # raises on a half-written file
    if (ckpts / "last.trainer.pt").exists() or (ckpts / ".last.trainer.pt.pending").exists():
        state = last_state(run)  # the pair as resume reads it: from one step (checked), weights_only
        assert {"model", "optimizer", "step"} <= set(state)
    if (ckpts / "index.json").exists():
        for entry in json.loads((ckpts / "index.json").read_text()):
            assert (ckpts / entry["file"]).is_file(), f"index.json names a missing file {entry['file']}"
    for name in ("results.json", "model_context.json", "run.json"):
        if (run / name).exists():
            json.loads((run / name).read_text())
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            json.loads(line)


def _weights(run: Path, label: str = "last") -> dict:
    return last_state(run, label)["model"]


def test_training_survives_sigkill_and_resume_is_bit_exact(server, tmp_path):
    """>= 24 kills across resume chains; after each one the run directory is intact, and every
    chain, resumed to the end, ends with weights equal to an uninterrupted run bit for bit."""
    log = tmp_path / "train.log"
    store = tmp_path / "state.zarr"
    r = server.call("collect", tmp_path, log, out=str(store), env={"type": "linear_state", "max_steps": 30},
                    policies=[{"type": "random"}], episodes=8)
    assert r["code"] == 0, log.read_text()[-2000:]
    recipe = tmp_path / "crashy.toml"
    steps = 200
    recipe.write_text(TRAIN_RECIPE.format(store=store, steps=steps))
    r = server.call("run", tmp_path, log, recipe_path=str(recipe), out=str(tmp_path / "ref"))
    assert r["code"] == 0, log.read_text()[-3000:]
    ref = _only(tmp_path / "ref")
    ref_weights = _weights(ref)

    rng = random.Random(7)
    kills, chains, finished, run = 0, 0, 0, None
    for _ in range(4 * KILLS):
        if kills >= KILLS and run is None:
            break
        if run is None:  # start a new chain: a fresh run that will be killed
            chains += 1
            out = tmp_path / f"chain{chains}"
            r = server.call("run", tmp_path, log, kill_after=rng.uniform(0.4, 0.8) if kills < KILLS else None,
                            recipe_path=str(recipe), out=str(out))
            run = _only(out)
        else:
            r = server.call("run", tmp_path, log, kill_after=rng.uniform(0.2, 0.7) if kills < KILLS else None,
                            recipe_path=None, resume=str(run))
        if r["killed"]:
            kills += 1
            _check_run_dir_intact(run)
            continue
        assert r["code"] == 0, log.read_text()[-3000:]
        _check_run_dir_intact(run)
        got = _weights(run)
        assert got.keys() == ref_weights.keys()
        for k in got:
            assert torch.equal(got[k], ref_weights[k]), f"chain {chains}: {k} differs from the uninterrupted run"
        assert last_state(run)["step"] == steps
        assert json.loads((run / "results.json").read_text())["train"]["global_step"] == steps
        finished += 1
        run = None
    assert kills >= 20 and finished >= 1 and run is None


def test_resume_removes_stale_temp_files_everywhere_in_the_run(tmp_path, monkeypatch, capsys):
    """A kill mid atomic write leaves `.<name>.<random>.tmp` files; --resume removes them at the
    run root, in plots/ and in checkpoints/ (not only checkpoints/), and nothing else."""
    from _reliability_util import tiny_run

    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path)
    stale = [run / ".results.json.k2j3.tmp", run / ".report.md.x.tmp", run / "checkpoints" / ".last.pt.q.tmp"]
    (run / "plots").mkdir(exist_ok=True)
    stale.append(run / "plots" / ".curve.png.z.tmp")
    for f in stale:
        f.write_text("half-written")
    keep = [run / ".hidden_but_not_temp", run / "notes.tmp.txt"]
    for f in keep:
        f.write_text("mine")
    assert wm_main(["run", "--resume", str(run)]) == 0, capsys.readouterr().err
    assert not any(f.exists() for f in stale)
    assert all(f.read_text() == "mine" for f in keep)


# ----------------------------------------------------------------------------- creation windows
# A random kill rarely lands in the ~50 ms while a store or run directory is being made;
# these kill exactly there, as soon as a file of the creation appears (polled every
# ~0.2 ms). Before stores and runs were built in a sibling and renamed, a kill when the
# store's root zarr.json appeared left a store every later collect failed to open, and a
# run directory without recipe.resolved.toml that --resume called "not a run directory".
CREATION_POINTS = {
    "store root appears": ["s.zarr/zarr.json"],
    "store being built": [".s.zarr.*.creating/episodes"],
    "first index chunk": ["s.zarr/episodes/ends/c/0", ".s.zarr.*.creating/episodes/ends/c/0"],
}


@pytest.mark.parametrize("point", list(CREATION_POINTS))
def test_kill_during_store_creation_leaves_no_store_or_a_whole_one(server, tmp_path, point):
    log = tmp_path / "log"
    kw = dict(out=str(tmp_path / "s.zarr"), env={"type": "linear_state", "max_steps": 5},
              policies=[{"type": "random"}], episodes=3)
    r = server.call("collect", tmp_path, log, kill_when=[str(tmp_path / g) for g in CREATION_POINTS[point]], **kw)
    assert r["killed"], f"the kill point {point} was never reached: {log.read_text()[-2000:]}"
    store = tmp_path / "s.zarr"
    assert not store.exists() or validate_store(store) == [], validate_store(store)
    r = server.call("collect", tmp_path, log, **kw)  # the same command again finishes
    assert r["code"] == 0, log.read_text()[-2000:]
    assert validate_store(store) == [] and EpisodeStore.open(store).num_episodes == 3
    assert not list(tmp_path.glob(".*.creating"))  # the killed creation's leftovers are gone


@pytest.mark.parametrize("point", ["final", "being built"])
def test_kill_during_run_directory_creation_leaves_a_resumable_run_or_none(server, tmp_path, point):
    from _reliability_util import tiny_recipe

    log = tmp_path / "log"
    recipe = tiny_recipe(tmp_path)
    runs = tmp_path / "runs"
    watch = str(runs / "*_tiny") if point == "final" else str(runs / ".*_tiny.*.creating")
    r = server.call("run", tmp_path, log, kill_when=[watch], recipe_path=str(recipe), out=str(runs))
    assert r["killed"], log.read_text()[-2000:]
    for run in [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []:
        assert (run / "recipe.resolved.toml").is_file() and (run / "run.json").is_file()
        r = server.call("run", tmp_path, log, recipe_path=None, resume=str(run))
        assert r["code"] == 0, log.read_text()[-2000:]
        assert json.loads((run / "results.json").read_text())["train"]["global_step"] == 4


def test_kill_during_import_leaves_no_store_and_the_import_reruns(server, tmp_path):
    from test_data_importers import _episodes, _write_npy_shards

    src = tmp_path / "shards"
    src.mkdir()
    _write_npy_shards(src, _episodes([9, 5, 12, 4], np.random.default_rng(0)))
    log, out = tmp_path / "log", tmp_path / "out.zarr"
    # after the first episode is committed: the import is half done
    watch = [str(out / "episodes/ends/c/0"), str(tmp_path / ".out.zarr.*.creating/episodes/ends/c/0")]
    r = server.call("import", tmp_path, log, kill_when=watch, fmt="npy-shards", src=str(src), out=str(out))
    assert r["killed"], log.read_text()[-2000:]
    assert not out.exists() or validate_store(out) == []
    if not out.exists():
        r = server.call("import", tmp_path, log, fmt="npy-shards", src=str(src), out=str(out))
        assert r["code"] == 0, log.read_text()[-2000:]
    assert EpisodeStore.open(out).num_episodes == 4 and validate_store(out) == []


def test_new_run_removes_only_stale_run_creations(tmp_path):
    """A killed run creation leaves `.<stamp>_<name>.XXXX.creating`; the next run in that folder
    removes it once it is old, and never a store being built there (whatever its age)."""
    import os

    from wm_framework.runs.context import new_run_dir

    stale_run = tmp_path / ".20260101-000000_tiny.k2j3.creating"
    store_building = tmp_path / ".s.zarr.x9y8.creating"
    fresh_run = tmp_path / ".20260101-000001_tiny.a1b2.creating"
    for d in (stale_run, store_building, fresh_run):
        d.mkdir()
    old = 10_000
    for d in (stale_run, store_building):
        os.utime(d, (os.stat(d).st_atime - old, os.stat(d).st_mtime - old))
    run = new_run_dir("tiny", tmp_path, populate=lambda d: (d / "recipe.resolved.toml").write_text(""))
    assert (run / "recipe.resolved.toml").is_file()
    assert not stale_run.exists() and store_building.exists() and fresh_run.exists()
