"""LeRobot v3.0 datasets both ways: a dataset the test writes in LeRobot's layout (Parquet,
MP4 of several episodes per file, meta/) imports, trains a smoke run, exports and
re-imports equal; a collected store round-trips within the video codec's loss."""

from __future__ import annotations

import fractions
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from wm_framework.commands.data import app
from wm_framework.data.importers import import_store
from wm_framework.data.inspect import validate_store
from wm_framework.data.lerobot_export import export_lerobot
from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError

pa = pytest.importorskip("pyarrow", reason="pyarrow missing or built for another NumPy", exc_type=ImportError)
import pyarrow.parquet as pq  # noqa: E402

runner = CliRunner()
FPS, LENGTHS = 10, [5, 7, 4]
CAMERAS = {"top": (24, 32), "wrist": (16, 16)}
#: Round-trip loss of the default codec (H.264 yuv420p, CRF 18) on the toy ball's 17x17
#: frames (odd: padded to 18x18 and cropped back), in uint8 levels; measured 1.55 mean.
H264_MEAN_ABS_ERROR = 2.0


def frame(e: int, t: int, h: int, w: int) -> np.ndarray:
    """A frame that says (episode, step): flat grey 20e + 8t, a white 4x4 square at column 2t."""
    f = np.full((h, w, 3), 20 * e + 8 * t + 16, np.uint8)
    f[4:8, 2 * t:2 * t + 4] = 255
    return f


def write_mp4(path, frames, fps=FPS):
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.time_base = fractions.Fraction(1, fps)
        for k, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = k
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_lerobot_dataset(root, stats_ok: bool = True):
    """A LeRobot v3.0 dataset as LeRobot writes one: episodes 0-1 in data file 0 and
    episode 2 in data file 1, every episode of a camera in one MP4, tasks as pandas writes
    them, variable-length list columns (the exporter writes fixed-size ones)."""
    rows, episodes, start = [], [], 0
    for e, n in enumerate(LENGTHS):
        for t in range(n):
            rows.append({"observation.state": [float(e), t * 0.5, -1.0], "action": [0.1 * t, -0.2 * e],
                         "observation.environment_state": [10.0 * e + t, 3.0],
                         "next.reward": float(t == n - 1) + 0.25 * t, "next.done": e != 1 and t == n - 1,
                         "timestamp": np.float32(t / FPS), "frame_index": t, "episode_index": e,
                         "index": start + t, "task_index": e % 2})
        ep = {"episode_index": e, "tasks": [["push the block", "stack"][e % 2]], "length": n,
              "data/chunk_index": 0, "data/file_index": 0 if e < 2 else 1,
              "dataset_from_index": start, "dataset_to_index": start + n,
              "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for cam in CAMERAS:
            ep.update({f"videos/observation.images.{cam}/chunk_index": 0, f"videos/observation.images.{cam}/file_index": 0,
                       f"videos/observation.images.{cam}/from_timestamp": start / FPS,
                       f"videos/observation.images.{cam}/to_timestamp": (start + n) / FPS})
        episodes.append(ep)
        start += n
    schema = pa.schema([("observation.state", pa.list_(pa.float32())), ("action", pa.list_(pa.float32())),
                        ("observation.environment_state", pa.list_(pa.float32())), ("next.reward", pa.float32()),
                        ("next.done", pa.bool_()), ("timestamp", pa.float32()), ("frame_index", pa.int64()),
                        ("episode_index", pa.int64()), ("index", pa.int64()), ("task_index", pa.int64())])
    os.makedirs(root / "data" / "chunk-000")
    split = LENGTHS[0] + LENGTHS[1]
    pq.write_table(pa.Table.from_pylist(rows[:split], schema), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[split:], schema), root / "data" / "chunk-000" / "file-001.parquet")
    os.makedirs(root / "meta" / "episodes" / "chunk-000")
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "task": ["push the block", "stack"]}), root / "meta" / "tasks.parquet")
    for cam, (h, w) in CAMERAS.items():
        frames = np.stack([frame(e, t, h, w) for e, n in enumerate(LENGTHS) for t in range(n)])
        write_mp4(root / "videos" / f"observation.images.{cam}" / "chunk-000" / "file-000.mp4", frames)
    vec = lambda d, names: {"dtype": "float32", "shape": [d], "names": names}  # noqa: E731
    features = {"observation.state": vec(3, ["x", "y", "z"]), "action": vec(2, ["vx", "vy"]),
                "observation.environment_state": vec(2, None), "next.reward": {"dtype": "float32", "shape": [1], "names": None},
                "next.done": {"dtype": "bool", "shape": [1], "names": None},
                **{f"observation.images.{c}": {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
                   for c, (h, w) in CAMERAS.items()},
                "timestamp": {"dtype": "float32", "shape": [1], "names": None},
                **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("frame_index", "episode_index", "index", "task_index")}}
    info = {"codebase_version": "v3.0", "robot_type": "toy", "total_episodes": 3, "total_frames": start, "total_tasks": 2,
            "chunks_size": 1000, "fps": FPS, "splits": {"train": "0:3"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", "features": features}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    actions = np.array([r["action"] for r in rows])
    stats = {"action": {"min": actions.min(0).tolist(), "max": actions.max(0).tolist(),
                        "mean": (actions.mean(0) + (0 if stats_ok else 1)).tolist(), "std": actions.std(0).tolist()}}
    (root / "meta" / "stats.json").write_text(json.dumps(stats))
    return rows


def test_import_maps_frames_actions_rewards_flags_labels_and_tasks(tmp_path):
    src = tmp_path / "ds"
    write_lerobot_dataset(src)
    with pytest.raises(WMUsageError, match=r"2 cameras \(top, wrist\); choose one with --camera"):
        import_store("lerobot", src, tmp_path / "x.zarr")
    s = import_store("lerobot", src, tmp_path / "top.zarr", camera="top")
    assert validate_store(s.path) == []
    assert s.episode_lengths.tolist() == LENGTHS and s.obs_shape == (24, 32, 3)
    assert s.label_names == ["state_x", "state_y", "state_z", "environment_state_0", "environment_state_1", "task_index"]
    assert s.attrs["tasks"] == ["push the block", "stack"] and s.env["params"]["fps"] == FPS
    # the last frame's action and reward have no observation after them: padding, counted
    assert s.env["params"]["final_actions_without_obs"] == 3
    assert s.env["params"]["final_reward_without_obs"] == pytest.approx(sum(1 + 0.25 * (n - 1) for n in LENGTHS))
    for e, n in enumerate(LENGTHS):
        ep = s.episode(e)
        want = np.stack([frame(e, t, 24, 32) for t in range(n)]).astype(int)
        assert np.abs(ep["obs"].astype(int) - want).max() <= 8  # H.264 of flat frames, one 4x4 square
        np.testing.assert_allclose(ep["action"][:-1], [[0.1 * t, -0.2 * e] for t in range(n - 1)], rtol=1e-6)
        assert np.isnan(ep["action"][-1]).all()
        np.testing.assert_allclose(ep["reward"], [0.25 * t for t in range(n - 1)] + [0.0])
        assert (ep["terminated"][-1], ep["truncated"][-1]) == ((True, False) if e != 1 else (False, True))
        np.testing.assert_array_equal(ep["labels/environment_state_0"], 10.0 * e + np.arange(n))
        np.testing.assert_array_equal(ep["labels/task_index"], np.full(n, e % 2))
    state = import_store("lerobot", src, tmp_path / "state.zarr", camera="none")
    assert state.obs_key == "obs/state" and "state_x" not in state.label_names
    np.testing.assert_array_equal(state.episode(2)["obs"][:, 1], 0.5 * np.arange(LENGTHS[2]))
    wrist = runner.invoke(app, ["import", "lerobot", str(src), "--out", str(tmp_path / "w.zarr"), "--camera", "wrist"])
    assert wrist.exit_code == 0 and EpisodeStore.open(tmp_path / "w.zarr").obs_shape == (16, 16, 3)
    assert "3 episodes end with an action whose outcome the source does not hold" in wrist.output


def test_import_checks_stats_version_and_paths(tmp_path):
    src = tmp_path / "ds"
    write_lerobot_dataset(src, stats_ok=False)
    with pytest.raises(WMUsageError, match=r"meta/stats.json does not describe the data: action mean\[0\]"):
        import_store("lerobot", src, tmp_path / "a.zarr", camera="top")
    assert not (tmp_path / "a.zarr").exists()
    assert import_store("lerobot", src, tmp_path / "a.zarr", camera="top", check_stats=False).num_episodes == 3
    info = json.loads((src / "meta" / "info.json").read_text())
    for template, message in (("../../{chunk_index}.parquet", "resolves outside"),
                              ("data/{chunk_index.__class__}.parquet", "unknown field 'chunk_index.__class__'")):
        (src / "meta" / "info.json").write_text(json.dumps({**info, "data_path": template}))
        with pytest.raises(WMUsageError, match=message):
            import_store("lerobot", src, tmp_path / "b.zarr", camera="top", check_stats=False)
    (src / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(WMUsageError, match="reads v3.x"):
        import_store("lerobot", src, tmp_path / "b.zarr", camera="top")
    with pytest.raises(WMUsageError, match="--camera is for lerobot datasets"):
        import_store("hdf5", src, tmp_path / "b.zarr", camera="top")


def test_lerobot_dataset_imports_trains_exports_and_reimports_equal(tmp_path):
    from wm_framework.runs.run import run_recipe

    src = tmp_path / "ds"
    write_lerobot_dataset(src)
    store = str(tmp_path / "imported.zarr")
    assert runner.invoke(app, ["import", "lerobot", str(src), "--out", store, "--camera", "top"]).exit_code == 0
    recipe = tmp_path / "smoke.toml"
    recipe.write_text(f'''name = "lerobot_smoke"
stages = ["data", "train"]
[data]
train = "{store}"
window = 3
val_fraction = 0.3
[model]
encoder = {{ type = "identity" }}
predictor = {{ type = "mlp", hidden = 16 }}
[model.losses.pred]
type = "mse"
[train]
steps = 2
batch_size = 4
eval_every = 2
checkpoint_every = 2
log_every = 1
''')
    run = run_recipe(str(recipe), [], out=str(tmp_path / "runs"), progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    out = tmp_path / "exported"
    res = runner.invoke(app, ["export", "lerobot", store, str(out), "--codec", "lossless", "--no-progress"])
    assert res.exit_code == 0, res.output
    back = import_store("lerobot", out, tmp_path / "back.zarr")  # one camera: chosen without --camera
    first = EpisodeStore.open(store)
    assert back.label_names == first.label_names and back.attrs["tasks"] == first.attrs["tasks"]
    assert "final_actions_without_obs" not in back.env["params"]  # our last frame is the final observation
    for e in range(first.num_episodes):
        a, b = first.episode(e), back.episode(e)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # lossless video: every array equal


def test_collected_store_round_trips_within_the_codec_loss(tmp_path, monkeypatch):
    from wm_framework.data import lerobot_format
    from wm_framework.data.collect import collect

    s = collect(tmp_path / "s.zarr", {"type": "bouncing_ball", "size": 17, "max_steps": 12, "terminate_on_miss": True},
                [{"type": "random"}, {"type": "sticky_random"}], episodes=2, progress=False)
    monkeypatch.setattr(lerobot_format, "VIDEO_FILE_MB", 1e-6)  # a new file after every episode
    summary = export_lerobot(s.path, tmp_path / "ds")
    assert summary["files"] == 4 and summary["fps"] == 15  # the env's render_fps
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.main"]["shape"] == [18, 18, 3]  # yuv420p: padded to even
    assert info["features"]["labels"]["names"] == s.label_names and info["total_frames"] == s.num_frames
    assert pq.read_table(tmp_path / "ds" / "meta" / "tasks.parquet").column("task").to_pylist() == ["random", "sticky_random"]
    # LeRobot's stats: quantiles too, and per episode in meta/episodes (lerobot's delete_episodes and
    # split_dataset rebuild stats.json from those columns; without them it came out empty)
    stats = json.loads((tmp_path / "ds" / "meta" / "stats.json").read_text())
    names = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert set(stats["action"]) == set(stats["observation.images.main"]) == names
    assert np.array(stats["observation.images.main"]["q50"]).shape == (3, 1, 1)
    eps = pq.read_table(tmp_path / "ds" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    for key in ("action", "next.reward", "labels", "index", "observation.images.main"):
        assert {f"stats/{key}/{n}" for n in names} <= eps.keys(), key
    assert sum(c[0] for c in eps["stats/index/count"]) == s.num_frames
    assert [m[0] for m in eps["stats/index/min"]] == eps["dataset_from_index"]
    assert np.array(eps["stats/observation.images.main/mean"][0]).shape == (3, 1, 1)
    back = import_store("lerobot", tmp_path / "ds", tmp_path / "back.zarr")
    assert back.episode_policy.tolist() == s.episode_policy.tolist() and back.episode_seed.tolist() == s.episode_seed.tolist()
    assert back.attrs["pixel_labels"] == ["ball_x", "ball_y", "paddle_x"] and "task_index" not in back.label_names
    errors = []
    for e in range(s.num_episodes):
        a, b = s.episode(e), back.episode(e)
        errors.append(np.abs(a["obs"].astype(int) - b["obs"].astype(int)))
        for k in a:
            if k != "obs":
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert back.obs_shape == s.obs_shape and np.concatenate(errors).mean() <= H264_MEAN_ABS_ERROR


def test_grey_frames_export_and_refusals(tmp_path):
    from _data_util import make_row_store
    from wm_framework.data.writer import StoreWriter

    w = StoreWriter(tmp_path / "g.zarr", env={"name": "synthetic", "params": {}},
                    obs_spec={"key": "pixels", "shape": [5, 7, 1], "dtype": "uint8"},
                    action_spec={"type": "discrete", "n": 3}, label_names=[])
    obs = np.arange(6 * 35, dtype=np.uint8).reshape(6, 5, 7, 1) * 3
    flags = np.zeros(6, bool)
    w.append_episode({"obs": obs, "action": np.array([0, 1, 2, 1, 0, -1]), "reward": np.zeros(6, np.float32),
                      "terminated": flags, "truncated": np.r_[flags[:-1], True]}, "p", 7)
    export_lerobot(tmp_path / "g.zarr", tmp_path / "g", codec="lossless", fps=4)
    back = import_store("lerobot", tmp_path / "g", tmp_path / "g2.zarr")
    assert back.obs_shape == (5, 7, 1) and back.action_spec == {"type": "discrete", "n": 3}
    np.testing.assert_array_equal(back.episode(0)["obs"], obs)
    make_row_store(tmp_path / "two.zarr", [3])  # frames with 2 channels
    with pytest.raises(WMUsageError, match="2 channels; MP4 holds 1"):
        export_lerobot(tmp_path / "two.zarr", tmp_path / "two")
    with pytest.raises(WMUsageError, match="already exists"):
        export_lerobot(tmp_path / "g.zarr", tmp_path / "g")
    res = runner.invoke(app, ["export", "csv", str(tmp_path / "g.zarr"), str(tmp_path / "c")])
    assert isinstance(res.exception, WMUsageError) and "unknown export format 'csv'" in str(res.exception)
    assert not (tmp_path / "two").exists()


def test_image_features_stored_as_png_bytes_in_the_data_file(tmp_path):
    import io

    from PIL import Image

    root = tmp_path / "img"
    rows = []
    for t in range(4):
        buf = io.BytesIO()
        Image.fromarray(frame(0, t, 12, 10)).save(buf, format="PNG")
        rows.append({"observation.image": {"bytes": buf.getvalue(), "path": None}, "action": t % 3, "timestamp": t / FPS,
                     "frame_index": t, "episode_index": 0, "index": t, "task_index": 0})
    os.makedirs(root / "data" / "chunk-000")
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "chunk-000" / "file-000.parquet")
    os.makedirs(root / "meta" / "episodes" / "chunk-000")
    pq.write_table(pa.Table.from_pylist([{"episode_index": 0, "tasks": ["t"], "length": 4, "data/chunk_index": 0,
                                          "data/file_index": 0}]), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    features = {"observation.image": {"dtype": "image", "shape": [12, 10, 3], "names": ["height", "width", "channels"]},
                "action": {"dtype": "int64", "shape": [1], "names": None}}
    (root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": FPS, "features": features,
                                                         "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"}))
    s = import_store("lerobot", root, tmp_path / "img.zarr")
    np.testing.assert_array_equal(s.episode(0)["obs"], np.stack([frame(0, t, 12, 10) for t in range(4)]))  # PNG: exact
    assert s.action_spec == {"type": "discrete", "n": 3} and s.episode(0)["action"].tolist() == [0, 1, 2, -1]
