"""Numbers you can trust: data that is what the recipe and the files say it is.

* window overlap between stores (``wm data overlap``) counts shared and static windows;
* ``wm run`` reuses a store only if its collect table built it (else one line, or rebuild);
* importers read channel-first and grayscale pixels, and refuse what they cannot tell;
* run directories record absolute store paths; ``--data`` / ``--test-data`` override them;
* LeRobot-style Parquet columns map by their documented meaning.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wm_framework.commands.data import app as data_app
from wm_framework.data.importers import import_store
from wm_framework.data.inspect import store_info, validate_store
from wm_framework.data.store import EpisodeStore
from wm_framework.data.writer import StoreWriter
from wm_framework.errors import WMUsageError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# -- window overlap ---------------------------------------------------------------------------
def _frames_store(path, episodes: list[list[int]]) -> EpisodeStore:
    """A store whose frame k of an episode is a 2x2 image filled with the value episodes[e][k]."""
    w = StoreWriter(path, env={"name": "synthetic", "params": {}}, obs_spec={"key": "pixels", "shape": [2, 2, 1], "dtype": "uint8"},
                    action_spec={"type": "discrete", "n": 2}, label_names=[])
    for e, values in enumerate(episodes):
        n = len(values)
        flags = np.zeros(n, bool)
        w.append_episode({"obs": np.array(values, np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2),
                          "action": np.r_[np.zeros(n - 1, np.int64), -1], "reward": np.zeros(n, np.float32),
                          "terminated": flags, "truncated": np.r_[flags[:-1], True]}, "p", seed=e)
    return EpisodeStore.open(path)


def test_window_overlap_counts_shared_moving_and_static_windows(tmp_path):
    from wm_framework.data.overlap import window_overlap

    a = _frames_store(tmp_path / "a.zarr", [[1, 2, 3, 4, 5], [9, 9, 9, 9]])
    b = _frames_store(tmp_path / "b.zarr", [[0, 2, 3, 4, 7], [9, 9, 9, 8], [3, 4, 5]])
    r = window_overlap(a, b, window=3)
    # b's windows: (0,2,3) (2,3,4)* (3,4,7) | (9,9,9)*static (9,9,8) | (3,4,5)*
    assert (r.total, r.shared, r.static_total, r.static_shared, r.moving_shared) == (6, 3, 1, 1, 2)
    assert window_overlap(a, b, window=2, frameskip=2).shared == 3  # (2,4), (9,9) [static] and (3,5)
    assert window_overlap(a, b, window=3, episodes_b=[0]).to_json() == {
        "window": 3, "frameskip": 1, "total": 3, "shared": 1, "static_total": 0, "static_shared": 0, "moving_shared": 1}
    assert r.describe().startswith("2 of 6 test windows (3 frames, frameskip 1) occur in training; 1 static")
    with pytest.raises(WMUsageError, match="window and frameskip"):
        window_overlap(a, b, window=0)


def test_overlap_command_prints_the_line_and_json(tmp_path):
    _frames_store(tmp_path / "a.zarr", [[1, 2, 3, 4, 5]])
    _frames_store(tmp_path / "b.zarr", [[1, 2, 3, 4, 6]])
    res = runner.invoke(data_app, ["overlap", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--window", "4", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["moving_shared"] == 1
    res = runner.invoke(data_app, ["overlap", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--window", "4"])
    assert res.output.startswith("1 of 2 test windows (4 frames, frameskip 1)")


# -- wm run reuses only a matching store ----------------------------------------------------------
def _toy_ctx(tmp_path, *overrides):
    from wm_framework.recipe import load_recipe
    from wm_framework.runs.context import RunContext

    recipe = load_recipe(ROOT / "recipes" / "toy_ball.toml",
                         [f'data.train="{tmp_path / "toy.zarr"}"', "data.collect.episodes=2", *overrides])
    run = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    run.mkdir()
    return RunContext(run, recipe)


def test_run_refuses_a_store_built_with_other_env_params_and_rebuilds_on_request(tmp_path):
    from wm_framework.runs.store_reuse import ensure_stores

    ensure_stores(_toy_ctx(tmp_path))
    assert EpisodeStore.open(tmp_path / "toy.zarr").obs_shape == (32, 32, 3)
    ensure_stores(_toy_ctx(tmp_path))  # the same recipe: reused
    with pytest.raises(WMUsageError) as err:
        ensure_stores(_toy_ctx(tmp_path, "data.collect.env.size=16"))
    msg = str(err.value)
    assert "\n" not in msg and "size is 32 in the store, 16 in the recipe" in msg and "data.rebuild = true" in msg
    ensure_stores(_toy_ctx(tmp_path, "data.collect.env.size=16", "data.rebuild=true"))
    assert EpisodeStore.open(tmp_path / "toy.zarr").obs_shape == (16, 16, 3)


@pytest.mark.parametrize("change, words", [
    ('data.collect.policies=[{type="sticky_random", p=0.5}]', "'random'"),  # other policy
    ('data.collect.policies=[{type="random", seed=3}]', "played by"),       # same policy, other params
    ("data.collect.seed=7", "seed = 7"),                                      # other episodes
])
def test_run_refuses_a_store_of_other_policies_or_seed(tmp_path, change, words):
    from wm_framework.runs.store_reuse import ensure_stores

    ensure_stores(_toy_ctx(tmp_path))
    with pytest.raises(WMUsageError, match="was not built by data.collect") as err:
        ensure_stores(_toy_ctx(tmp_path, change))
    assert words in str(err.value)


def test_wm_run_exits_2_on_a_mismatching_store(tmp_path, monkeypatch, capsys):
    """The reported case: `wm run recipes/toy_ball.toml --smoke data.collect.env.size=16` after a 32-px run."""
    from wm_framework.cli import main

    monkeypatch.chdir(tmp_path)
    recipe = str(ROOT / "recipes" / "toy_ball.toml")
    assert main(["run", recipe, "--smoke", "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2"]) == 0
    capsys.readouterr()
    assert main(["run", recipe, "--smoke", "data.collect.env.size=16"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "size is 32 in the store, 16 in the recipe" in err[0]


# -- pixel layouts ------------------------------------------------------------------------------
def _write_h5(path, pixels):
    h5py = pytest.importorskip("h5py")
    n = len(pixels)
    with h5py.File(path, "w") as f:
        f["pixels"] = pixels
        f["action"] = np.arange(n) % 3
        f["ep_offset"] = np.array([0, n // 2])
        f["ep_len"] = np.array([n // 2, n - n // 2])


def test_hdf5_channel_first_pixels_import_as_hwc_and_info_says_so(tmp_path):
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 255, (6, 3, 32, 32), dtype=np.uint8)
    _write_h5(tmp_path / "d.h5", chw)
    s = import_store("hdf5", tmp_path / "d.h5", tmp_path / "s.zarr")
    assert s.obs_shape == (32, 32, 3)
    np.testing.assert_array_equal(s.read("obs", 0, 6), chw.transpose(0, 2, 3, 1))
    assert store_info(s.path)["obs_layout"] == "(H, W, C), imported from channel-first (C, H, W)"
    assert validate_store(s.path) == []
    res = runner.invoke(data_app, ["info", s.path])
    assert "channel-first" in res.output


def test_ambiguous_layout_is_refused_unless_given(tmp_path):
    chw = np.random.default_rng(1).integers(0, 255, (4, 3, 8, 3), dtype=np.uint8)  # (C,H,W) or (H,W,C)?
    _write_h5(tmp_path / "d.h5", chw)
    with pytest.raises(WMUsageError, match="--layout hwc or --layout chw"):
        import_store("hdf5", tmp_path / "d.h5", tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
    res = runner.invoke(data_app, ["import", "hdf5", str(tmp_path / "d.h5"), "--out", str(tmp_path / "s.zarr"), "--layout", "chw"])
    assert res.exit_code == 0, res.output
    assert EpisodeStore.open(tmp_path / "s.zarr").obs_shape == (8, 3, 3)


def test_grayscale_npy_shards_import_with_a_channel_and_build_data_params(tmp_path):
    from wm_framework.recipe import load_recipe
    from wm_framework.runs.model_building import compute_data_params

    src = tmp_path / "shards"
    src.mkdir()
    L, T = 3, 8
    f = np.arange(T + 1, dtype=np.uint8)[:, None, None].repeat(5, 1).repeat(7, 2)  # (T+1, H=5, W=7) grayscale
    a = np.arange(T) % 4
    rows = range(L - 1, T)
    np.save(src / "shard_000000_frames.npy", np.stack([f[t - L + 1:t + 1] for t in rows]))  # (N, L, H, W)
    np.save(src / "shard_000000_actions.npy", np.stack([a[t - L + 1:t + 1] for t in rows]).astype(np.int64))
    np.save(src / "shard_000000_done.npy", np.stack([np.arange(t - L + 1, t + 1) == T - 1 for t in rows]))
    (src / "manifest.json").write_text(json.dumps({"shards": [{"index": 0}], "seq_len": L, "n_actions": 4}))
    s = import_store("npy-shards", src, tmp_path / "s.zarr")
    assert s.obs_shape == (5, 7, 1) and s.read("obs", 0, 3)[:, 0, 0, 0].tolist() == [0, 1, 2]
    recipe = load_recipe(ROOT / "recipes" / "toy_ball.toml", [f'data.train="{s.path}"'])
    assert compute_data_params(recipe, s, np.arange(s.num_episodes))["obs_shape"] == [1, 5, 7]


def test_a_store_with_two_axis_pixels_is_refused_when_opened(tmp_path):
    import zarr

    _frames_store(tmp_path / "s.zarr", [[1, 2, 3]])
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    g.attrs["obs"] = {"key": "pixels", "shape": [2, 2], "dtype": "uint8"}  # what the old importer wrote for gray frames
    with pytest.raises(WMUsageError, match=r"must have shape \(H, W, C\)"):
        EpisodeStore.open(tmp_path / "s.zarr")


# -- run directories work from any directory -------------------------------------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy_ball smoke run, made with relative data paths from its own directory."""
    from wm_framework.runs.run import run_recipe

    root = tmp_path_factory.mktemp("toy")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run = run_recipe(str(ROOT / "recipes" / "toy_ball.toml"), ["data.train=\"data/toy.zarr\"", "train.steps=4",
                         "train.eval_every=2", "train.checkpoint_every=2"], smoke=True, out="runs", progress=False)
        return root / run
    finally:
        os.chdir(cwd)


def test_run_records_absolute_store_paths_and_opens_them_from_elsewhere(toy_run, tmp_path, monkeypatch):
    from wm_framework.runs.context import load_run

    monkeypatch.chdir(tmp_path)  # a directory where data/toy.zarr does not exist
    rec = json.loads((toy_run / "stores.json").read_text())
    assert rec["train"] == str(toy_run.parents[1] / "data" / "toy.zarr") and rec["recipe"]["train"] == "data/toy.zarr"
    ctx = load_run(toy_run)
    assert ctx.sampler("train").store.num_episodes == 8
    assert ctx.sampler("val") is not None


def test_data_override_on_a_run_and_its_errors(toy_run, tmp_path, monkeypatch):
    from wm_framework.commands.eval import eval_command
    from wm_framework.runs.context import load_run

    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.zarr"
    import shutil

    shutil.copytree(toy_run.parents[1] / "data" / "toy.zarr", other)
    ctx = load_run(toy_run)
    ctx.use_stores(train=str(other))
    assert ctx.stores()["train"].path == str(other)
    with pytest.raises(WMUsageError, match="--test-data nope.zarr: no such store"):
        load_run(toy_run).use_stores(test="nope.zarr")
    with pytest.raises(WMUsageError, match="--data nope.zarr: no such store"):
        eval_command(toy_run, horizons="1", episodes=2, video=False, data=Path("nope.zarr"))


def test_eval_of_a_run_from_another_directory(toy_run, tmp_path, monkeypatch, capsys):
    from wm_framework.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(toy_run), "--horizons", "1", "--episodes", "2", "--no-video", "--split", "val"]) == 0
    assert "horizon   1" in capsys.readouterr().out


# -- LeRobot-style parquet ---------------------------------------------------------------------
def test_lerobot_parquet_maps_columns_by_their_meaning(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow missing or built for another NumPy", exc_type=ImportError)
    import pyarrow.parquet as pq
    from PIL import Image

    rows, index = [], 0
    for e, T in enumerate([4, 5]):
        for t in range(T):
            buf = io.BytesIO()
            Image.fromarray(np.full((6, 7, 3), 10 * e + t, np.uint8)).save(buf, format="PNG")
            rows.append({"observation.image": {"bytes": buf.getvalue(), "path": None}, "action": [float(t), -float(t)],
                         "episode_index": e, "frame_index": t, "timestamp": t / 10, "index": index, "task_index": 0,
                         "next.reward": float(1 + t), "next.done": t == T - 1, "next.success": t == T - 1,
                         "observation.state": [0.5, 1.5], "object_x": float(3 * t)})
            index += 1
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "lr.parquet")
    s = import_store("parquet", tmp_path / "lr.parquet", tmp_path / "s.zarr")
    assert s.label_names == ["object_x"]  # not next.reward, timestamp, index, task_index, frame_index
    ep = s.episode(1)
    assert ep["reward"].tolist() == [1, 2, 3, 4, 0]  # next.reward is the reward of the row's action
    assert ep["terminated"][-1] and not ep["truncated"].any()  # next.done
    np.testing.assert_array_equal(ep["action"][:-1], [[t, -t] for t in range(4)])
    info = store_info(s.path)
    assert info["mean_return"]["imported"] == pytest.approx((6 + 10) / 2)
    params = s.env["params"]  # the final actions have no observation after them: counted, not lost silently
    assert params["final_actions_without_obs"] == 2 and params["final_reward_without_obs"] == pytest.approx(4 + 5)
    assert validate_store(s.path) == []
