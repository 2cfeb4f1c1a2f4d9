"""Bad values are refused up front: one line naming the key, exit 2 (issue 25, point 7)."""

from __future__ import annotations

import pytest

from _reliability_util import non_progress_lines, tiny_recipe
from wm_framework.cli import main as wm_main


@pytest.mark.parametrize("override, key", [
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),
    ("train.betas=[2.0,-1.0]", "train.betas"),
    ('train.device="tpu"', "train.device"),
    ("train.steps=true", "train.steps"),
    ("train.steps=1e20", "train.steps"),
    ("train.steps=2000000000", "train.steps"),
    ("train.checkpoint_epochs=[-1]", "train.checkpoint_epochs"),
    ("train.batch_size=true", "train.batch_size"),
    ("data.collect.episodes=10000000000000", "data.collect.episodes"),
    ("data.collect.seed=-3", "data.collect.seed"),
])
def test_bad_recipe_values_exit_2_naming_the_key(tmp_path, capsys, override, key):
    recipe = tiny_recipe(tmp_path)
    for cmd in (["validate", str(recipe), override], ["run", str(recipe), override, "--out", str(tmp_path / "runs")]):
        assert wm_main(cmd) == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--max-steps", "0"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--max-steps", "-5"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "10000000000000"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--seed", "-1"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--workers", "0"],
])
def test_bad_cli_sizes_exit_2(tmp_path, capsys, args):
    assert wm_main([*args, "--out", str(tmp_path / "s.zarr")]) == 2
    assert not (tmp_path / "s.zarr").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_nproc_per_node_zero_exits_2(tmp_path, capsys):
    assert wm_main(["run", str(tiny_recipe(tmp_path)), "--nproc-per-node", "0"]) == 2
    assert "--nproc-per-node" in capsys.readouterr().err


# ----------------------------------------------------------------------------- importers
def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds no image data: what a
    decompression bomb looks like before it is decoded (a 140 KB file decoding to 1.3 GB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _parquet(tmp_path, obs=None, action=None, reward=None):
    pa = pytest.importorskip("pyarrow", reason="pyarrow missing or built for another NumPy", exc_type=ImportError)
    import pyarrow.parquet as pq

    rows = []
    for t in range(5):
        rows.append({"episode_id": 0, "step": t, "state": [float(t), 1.0], "action": t % 3, "reward": 1.0})
    for key, value in (("state", obs), ("action", action), ("reward", reward)):
        if value is not None:
            rows[2][key] = value
    f = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    return f


@pytest.mark.parametrize("case, expect", [
    ("negative action", "action -3"),
    ("NaN state", "state is NaN"),
    ("inf reward", "reward is NaN or infinite"),
    ("NaN continuous action", "action is NaN"),
    ("empty policy name", "--policy"),
    ("huge PNG", "4096x4096"),
    ("decompression bomb", "refused"),
])
def test_importers_refuse_values_a_store_must_not_hold(tmp_path, capsys, case, expect):
    policy = ["--policy", ""] if case == "empty policy name" else []
    if case == "negative action":
        src = _parquet(tmp_path, action=-3)
    elif case == "NaN state":
        src = _parquet(tmp_path, obs=[float("nan"), 1.0])
    elif case in ("inf reward", "empty policy name"):
        src = _parquet(tmp_path, reward=float("inf") if case == "inf reward" else None)
    elif case == "NaN continuous action":
        pa = pytest.importorskip("pyarrow", exc_type=ImportError)
        import pyarrow.parquet as pq

        rows = [{"episode_id": 0, "step": t, "state": [float(t)], "action": [0.5, float("nan") if t == 2 else 0.1]}
                for t in range(5)]
        src = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), src)
    else:
        pa = pytest.importorskip("pyarrow", exc_type=ImportError)
        import pyarrow.parquet as pq

        side = 5000 if case == "huge PNG" else 20000  # 25 M pixels (our limit) / 400 M (PIL's bomb check)
        rows = [{"episode_id": 0, "step": t, "image": _png_header(side, side), "action": 0} for t in range(3)]
        src = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "s.zarr"
    assert wm_main(["data", "import", "parquet", str(src), "--out", str(out), *policy]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err, (case, lines)
    assert not out.exists() and not list(tmp_path.glob(".*.creating"))


def test_import_refuses_a_trillion_actions(tmp_path, capsys):
    import json

    import numpy as np

    src = tmp_path / "shards"
    src.mkdir()
    np.save(src / "shard_000000_frames.npy", np.zeros((2, 3, 8, 6, 3), np.uint8))
    np.save(src / "shard_000000_actions.npy", np.zeros((2, 3), np.int64))
    np.save(src / "shard_000000_done.npy", np.array([[0, 0, 0], [0, 0, 1]], bool))
    (src / "manifest.json").write_text(json.dumps({"shards": [{"index": 0}], "n_actions": 10**12}))
    assert wm_main(["data", "import", "npy-shards", str(src), "--out", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err
    assert "at most 65536" in err and "Traceback" not in err
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("override, key", [
    ("model.predictor.hidden=0", "model.predictor"),
    ("model.encoder.hidden=-4", "model.encoder"),
])
def test_zero_or_negative_sizes_of_components_exit_2(tmp_path, capsys, override, key):
    recipe = tiny_recipe(tmp_path)
    assert wm_main(["run", str(recipe), override, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    lines = non_progress_lines(err)
    # A negative size is refused with the recipe's other problems (before any data is
    # collected); a zero one when the model is built: one line either way.
    assert len(lines) == 1 and lines[0].removeprefix("error: ").startswith(f"{key}:") and "Traceback" not in err, lines
    if "-" in override:
        assert not (tmp_path / "runs").exists() and "is negative; it is a size or a count" in lines[0]


@pytest.mark.parametrize("env, param", [
    ("breakout", "env.obs_size=[100000,100000]"),  # was: MemoryError allocating 27.9 GiB, exit 1
    ("bouncing_ball", "env.size=50000"),
    ("arx5", "env.render_size=[64,100000]"),
])
def test_image_sizes_that_cannot_be_served_are_refused_with_the_limit(tmp_path, capsys, env, param):
    out = tmp_path / "s.zarr"
    assert wm_main(["data", "collect", "--env", env, "--policy", "random", "--episodes", "1", "--out", str(out),
                    param]) == 2
    err = capsys.readouterr().err
    assert "2048" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_recipe_together_with_resume_exits_2(tmp_path, capsys):
    """Before: `wm run RECIPE --resume RUN` was accepted (exit 0) and silently ignored the recipe."""
    from _reliability_util import tiny_run

    run = tiny_run(tmp_path)
    other = tiny_recipe(tmp_path, name="other.toml", steps=9)
    assert wm_main(["run", str(other), "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the run's own recipe is used" in err and "Traceback" not in err
