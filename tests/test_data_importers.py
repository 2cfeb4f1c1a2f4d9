"""Importers (npy-shards, hdf5, parquet) and the `wm data` commands (info JSON, validate, import)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from _data_util import make_row_store
from wm_framework.commands.data import app, parse_overrides
from wm_framework.data.importers import import_store
from wm_framework.data.inspect import validate_store
from wm_framework.errors import WMUsageError

runner = CliRunner()


def _episodes(lengths, rng):
    """Raw episodes: frames f[0..T] (T actions), frame value encodes (episode, t)."""
    eps = []
    for e, T in enumerate(lengths):
        frames = np.zeros((T + 1, 6, 5, 3), np.uint8)
        frames[..., 0] = e
        frames[..., 1] = np.arange(T + 1)[:, None, None]
        eps.append((frames, rng.integers(0, 4, size=T)))
    return eps


def _write_npy_shards(root, eps, L=4, shard_size=7):
    """Sliding windows as REFERENCE §3 describes: one row per step once L actions exist."""
    frames, actions, done = [], [], []
    for f, a in eps:
        T = len(a)
        for t in range(L - 1, T):
            frames.append(f[t - L + 1: t + 1])
            actions.append(a[t - L + 1: t + 1])
            done.append(np.arange(t - L + 1, t + 1) == T - 1)
    shards = []
    for i, s in enumerate(range(0, len(frames), shard_size)):
        np.save(root / f"shard_{i:06d}_frames.npy", np.stack(frames[s:s + shard_size]))
        np.save(root / f"shard_{i:06d}_actions.npy", np.stack(actions[s:s + shard_size]).astype(np.int64))
        np.save(root / f"shard_{i:06d}_done.npy", np.stack(done[s:s + shard_size]))
        shards.append({"index": i, "count": len(frames[s:s + shard_size])})
    (root / "manifest.json").write_text(json.dumps({"shards": shards, "total": len(frames), "seq_len": L}))


def test_npy_shards_rebuilds_each_episode_once(tmp_path):
    src = tmp_path / "shards"
    src.mkdir()
    eps = _episodes([9, 5, 12, 4], np.random.default_rng(0))
    _write_npy_shards(src, eps)  # 7-row shards: episodes straddle shard boundaries
    before = sorted(os.listdir(tmp_path))
    s = import_store("npy-shards", src, tmp_path / "out.zarr")
    # wrote only --out (and its lock file, documented in locks.py); no temporary left behind
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["out.zarr", ".out.zarr.wm-lock"])
    assert s.num_episodes == 4
    # T stored frames (the frame after the last action is not in the shards) -> T rows
    assert s.episode_lengths.tolist() == [9, 5, 12, 4]
    for e, (f, a) in enumerate(eps):
        got = s.episode(e)
        np.testing.assert_array_equal(got["obs"], f[:-1])  # no duplicates, in order
        np.testing.assert_array_equal(got["action"][:-1], a[:-1])
        assert got["action"][-1] == -1 and got["truncated"][-1]
    assert s.action_spec["type"] == "discrete" and validate_store(s.path) == []


def test_hdf5_import_with_labels_and_previous_action_alignment(tmp_path):
    import h5py

    lengths, offsets = np.array([5, 8, 3]), np.array([0, 5, 13])
    n = lengths.sum()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)
    action = rng.normal(size=(n, 2)).astype(np.float32)
    action[offsets] = np.nan  # LeWM-style: row t holds the action that led to it
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["pixels"], h5["action"], h5["reward"] = pixels, action, np.arange(n, dtype=np.float32)
        h5["ep_len"], h5["ep_offset"] = lengths, offsets
        h5["proprio"] = rng.normal(size=(n, 2))
        h5["ball_x"] = np.arange(n, dtype=np.float64)
    s = import_store("hdf5", tmp_path / "d.h5", tmp_path / "h.zarr")
    assert s.episode_lengths.tolist() == [5, 8, 3] and s.label_names == ["ball_x", "proprio_0", "proprio_1"]
    ep = s.episode(1)
    np.testing.assert_array_equal(ep["obs"], pixels[5:13])
    np.testing.assert_array_equal(ep["action"][:-1], action[6:13])  # shifted back one row
    assert np.isnan(ep["action"][-1]).all()
    np.testing.assert_array_equal(ep["labels/ball_x"], np.arange(5, 13))
    assert ep["reward"].tolist() == list(range(6, 13)) + [0]
    assert validate_store(s.path) == []


def test_parquet_import_png_images_in_shuffled_rows(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow missing or built for another NumPy", exc_type=ImportError)
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(2)
    rows = []
    for e, T in enumerate([4, 6]):
        for t in range(T):
            img = np.full((6, 7, 3), 10 * e + t, np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            rows.append({"episode_id": e, "step": t, "image": buf.getvalue(), "action": int(rng.integers(3)),
                         "reward": float(t), "paddle_x": float(100 * e + t)})
    order = rng.permutation(len(rows))
    table = pa.Table.from_pylist([rows[i] for i in order])
    pq.write_table(table, tmp_path / "d.parquet")
    s = import_store("parquet", tmp_path / "d.parquet", tmp_path / "p.zarr")
    assert s.episode_lengths.tolist() == [4, 6] and s.label_names == ["paddle_x"]
    ep = s.episode(1)
    assert ep["obs"][:, 0, 0, 0].tolist() == [10, 11, 12, 13, 14, 15]
    assert ep["labels/paddle_x"].tolist() == [100, 101, 102, 103, 104, 105]
    want = [r["action"] for r in rows if r["episode_id"] == 1][:-1]
    assert ep["action"].tolist() == want + [-1]
    with pytest.raises(WMUsageError, match="already exists"):
        import_store("parquet", tmp_path / "d.parquet", tmp_path / "p.zarr")


def test_info_json_and_validate_commands(tmp_path):
    path = str(tmp_path / "s.zarr")
    make_row_store(path, [5, 3, 7, 4], policies=["a", "b"])
    res = runner.invoke(app, ["info", path, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["episodes"] == 4 and info["frames"] == 19
    assert info["policies"] == {"a": 2, "b": 2}
    assert info["mean_length"] == {"a": 5.0, "b": 2.5}  # actions per episode: (4+6)/2, (2+3)/2
    assert info["mean_return"] == {"a": 5.0, "b": 2.5}  # reward 1 per action
    assert info["bytes_raw"] > 0 and 0 < info["bytes_on_disk"]
    assert info["arrays"]["obs/pixels"] == {"shape": [19, 4, 4, 2], "dtype": "uint8", "chunks": info["arrays"]["obs/pixels"]["chunks"]}
    assert info["arrays"]["episodes/ends"]["shape"] == [4]
    assert runner.invoke(app, ["info", path]).exit_code == 0
    ok = runner.invoke(app, ["validate", path])
    assert ok.exit_code == 0 and "ok: 4 episodes" in ok.output
    import zarr

    zarr.open_group(path, mode="r+")["truncated"][4] = True  # episode 0 gets both flags
    bad = runner.invoke(app, ["validate", path])
    assert bad.exit_code == 2 and "both flags" in bad.output


def test_collect_and_import_commands(tmp_path):
    out = str(tmp_path / "c.zarr")
    res = runner.invoke(app, ["collect", "--env", "bouncing_ball", "--policy", "random", "--policy", "sticky_random",
                              "--episodes", "2", "--out", out, "--max-steps", "8", "--no-progress", "env.size=16"])
    assert res.exit_code == 0, res.output
    info = json.loads(runner.invoke(app, ["info", out, "--json"]).output)
    assert info["policies"] == {"random": 2, "sticky_random": 2} and info["obs"]["shape"] == [16, 16, 3]
    assert info["mean_length"] == {"random": 8.0, "sticky_random": 8.0}
    res = runner.invoke(app, ["import", "csv", out, "--out", str(tmp_path / "x.zarr")])
    assert isinstance(res.exception, WMUsageError) and "unknown import format 'csv'" in str(res.exception)
    assert parse_overrides(["env.obs_size=[64, 64]", "env.name=pong", "policy.p=0.5"]) == (
        {"obs_size": [64, 64], "name": "pong"}, {"p": 0.5})
    with pytest.raises(WMUsageError, match="env.PARAM=VALUE"):
        parse_overrides(["size=3"])
