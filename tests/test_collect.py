"""collect(): real toy envs, parallel workers, top-up semantics, and crash safety under SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_framework
from wm_framework.data.collect import collect
from wm_framework.data.inspect import validate_store
from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError

BALL = {"type": "bouncing_ball", "size": 16, "max_steps": 25, "terminate_on_miss": True}


@pytest.mark.parametrize("name", ["bouncing_ball", "linear_state"])
def test_toy_envs_pass_check_env_and_are_deterministic(name):
    env = wm_framework.make_env(name)
    check_env(env, skip_render_check=True)
    a = wm_framework.make_env(name)
    o1, i1 = a.reset(seed=7)
    o2, i2 = a.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    assert list(i1["labels"]) == a.label_names
    o3, _ = a.reset(seed=8)
    assert not np.array_equal(o1, o3)


def test_bouncing_ball_labels_match_pixels():
    env = wm_framework.make_env("bouncing_ball", size=32)
    obs, info = env.reset(seed=3)
    for _ in range(20):
        obs, _, _, _, info = env.step(2)
        white = np.argwhere((obs == 255).all(-1))
        lab = info["labels"]
        assert abs(white[:, 1].mean() - lab["ball_x"]) < 1.0 and abs(white[:, 0].mean() - lab["ball_y"]) < 1.0
        paddle = np.argwhere((obs[-1] == (200, 72, 72)).all(-1))[:, 0]
        assert abs(paddle.mean() - lab["paddle_x"]) <= 1.0


def test_collect_records_rows_labels_and_attrs(tmp_path):
    out = tmp_path / "c.zarr"
    s = collect(out, BALL, [{"type": "random"}, {"type": "sticky_random", "p": 0.5}], episodes=3, progress=False)
    assert s.num_episodes == 6 and sorted(s.policies()) == ["random", "sticky_random"]
    assert s.env == {"name": "bouncing_ball", "params": {"size": 16, "max_steps": 25, "terminate_on_miss": True}}
    assert s.action_spec == {"type": "discrete", "n": 3} and s.obs_shape == (16, 16, 3)
    assert s.label_names == ["ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"]
    assert s.attrs["plugin_versions"]["blocks"]
    assert validate_store(str(out)) == []
    # replaying an episode's seed gives the same observations, labels and actions
    ep = s.episode(0)
    env = wm_framework.make_env("bouncing_ball", size=16, max_steps=25, terminate_on_miss=True)
    obs, info = env.reset(seed=int(s.episode_seed[0]))
    np.testing.assert_array_equal(ep["obs"][0], obs)
    for t, a in enumerate(ep["action"][:-1]):
        obs, r, term, trunc, info = env.step(int(a))
        np.testing.assert_array_equal(ep["obs"][t + 1], obs)
        assert ep["reward"][t] == r and ep["labels/ball_x"][t + 1] == np.float32(info["labels"]["ball_x"])
    assert ep["terminated"][-1] == term and ep["truncated"][-1] == (trunc and not term)


def test_collect_continuous_state_env_with_two_workers(tmp_path):
    out = tmp_path / "lin.zarr"
    env = {"type": "linear_state", "dim": 3, "max_steps": 10}
    s = collect(out, env, [{"type": "random"}], episodes=4, workers=2, progress=False)
    assert s.obs_key == "obs/state" and s.obs_shape == (3,) and s.action_spec == {"type": "continuous", "dim": 2}
    assert s.episode_lengths.tolist() == [11] * 4 and len(set(s.episode_seed.tolist())) == 4
    assert np.isnan(s.episode(0)["action"][-1]).all() and s.episode(0)["truncated"][-1]
    assert validate_store(str(out)) == []
    # top-up: the target is per policy in total; new episodes get new seeds
    s2 = collect(out, env, [{"type": "random"}], episodes=6, progress=False)
    assert s2.num_episodes == 6 and len(set(s2.episode_seed.tolist())) == 6
    with pytest.raises(WMUsageError, match="incompatible"):
        collect(out, {**env, "dim": 4}, [{"type": "random"}], episodes=1, progress=False)
    with pytest.raises(WMUsageError, match="unknown policy 'nope'"):
        collect(out, env, [{"type": "nope"}], episodes=1, progress=False)


CRASH_SCRIPT = """
import sys
from wm_framework.data.collect import collect
collect(sys.argv[1], {"type": "bouncing_ball", "size": 16, "max_steps": 30, "terminate_on_miss": True},
        [{"type": "random"}, {"type": "sticky_random"}], episodes=500, progress=False)
"""


def _wait_for_episodes(out, n: int, timeout: float = 60) -> None:
    """Poll until the store at ``out`` holds ``n`` committed episodes (or time runs out)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            if EpisodeStore.open(out).num_episodes >= n:
                return
        except Exception:
            pass  # not created yet


def test_sigkill_mid_collection_leaves_only_complete_episodes(tmp_path):
    out = tmp_path / "crash.zarr"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(out)])
    try:
        _wait_for_episodes(out, 6)
        time.sleep(0.13)  # land somewhere inside a later append
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    s = EpisodeStore.open(out)
    assert 6 <= s.num_episodes < 1000
    assert validate_store(str(out)) == []
    last = s.episode(s.num_episodes - 1)
    assert last["terminated"][-1] or last["truncated"][-1]
    target = s.num_episodes // 2 + 2
    s2 = collect(out, {"type": "bouncing_ball", "size": 16, "max_steps": 30, "terminate_on_miss": True},
                 [{"type": "random"}, {"type": "sticky_random"}], episodes=target, progress=False)
    counts = {p: int((s2.episode_policy == p).sum()) for p in s2.policies()}
    assert counts == {"random": max(target, counts["random"]), "sticky_random": max(target, counts["sticky_random"])}
    assert min(counts.values()) == target
    assert validate_store(str(out)) == []
    for p in s2.policies():  # continuing never repeats a seed
        seeds = s2.episode_seed[s2.episode_policy == p]
        assert len(set(seeds.tolist())) == len(seeds)


def _by_policy_seed(store: EpisodeStore) -> dict:
    return {(str(p), int(s)): e for e, (p, s) in enumerate(zip(store.episode_policy, store.episode_seed))}


def test_parallel_workers_write_the_same_store_as_one_process(tmp_path, monkeypatch):
    from wm_framework.data import writer

    # 7-row chunks: episodes cover whole chunks (written by the workers) and share edge
    # chunks with their neighbours (written by the parent); both must land in the right rows.
    monkeypatch.setattr(writer, "CHUNK_BYTES", 16 * 16 * 3 * 7)
    env = {"type": "bouncing_ball", "size": 16, "max_steps": 40, "terminate_on_miss": True}
    pols = [{"type": "random"}, {"type": "sticky_random", "p": 0.5}]
    one = collect(tmp_path / "one.zarr", env, pols, episodes=4, progress=False)
    par = collect(tmp_path / "par.zarr", env, pols, episodes=4, workers=3, progress=False)
    assert par.zarr_array("obs").chunks[0] == 7 and par.episode_lengths.max() >= 15
    assert par.zarr_array("obs").shape[0] == par.num_frames  # headroom trimmed
    assert validate_store(str(tmp_path / "par.zarr")) == []
    a, b = _by_policy_seed(one), _by_policy_seed(par)
    assert a.keys() == b.keys() and len(a) == 8
    for key, e in a.items():
        ea, eb = one.episode(e), par.episode(b[key])
        assert ea.keys() == eb.keys()
        for col in ea:
            np.testing.assert_array_equal(ea[col], eb[col], err_msg=f"{key} {col}")
    with pytest.raises(WMUsageError, match="unknown policy 'nope'"):  # raised in a worker, re-raised here
        collect(tmp_path / "bad.zarr", env, [{"type": "nope"}], episodes=2, workers=2, progress=False)


PARALLEL_CRASH_SCRIPT = """
import sys
from wm_framework.data import collect as c
from wm_framework.data import writer
writer.CHUNK_BYTES = 16 * 16 * 3 * 5
c.COMMIT_EVERY_S = 0.0
c.collect(sys.argv[1], {"type": "bouncing_ball", "size": 16, "max_steps": 30, "terminate_on_miss": True},
          [{"type": "random"}, {"type": "sticky_random"}], episodes=2000, workers=2, progress=False)
"""


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may never be collected in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_sigkill_of_parallel_collection_leaves_complete_episodes_and_no_workers(tmp_path):
    out = tmp_path / "crash.zarr"
    proc = subprocess.Popen([sys.executable, "-c", PARALLEL_CRASH_SCRIPT, str(out)])
    try:
        _wait_for_episodes(out, 6)
        time.sleep(0.13)
        workers = _children(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(workers) >= 2
    deadline = time.time() + 10  # orphaned workers notice the parent is gone and stop writing
    while time.time() < deadline and any(map(_running, workers)):
        time.sleep(0.2)
    alive = [w for w in workers if _running(w)]
    assert not alive, f"workers still running after the parent was killed: {alive}"
    s = EpisodeStore.open(out)
    assert 6 <= s.num_episodes < 4000 and validate_store(str(out)) == []
    target = s.num_episodes // 2 + 3
    s2 = collect(out, {"type": "bouncing_ball", "size": 16, "max_steps": 30, "terminate_on_miss": True},
                 [{"type": "random"}, {"type": "sticky_random"}], episodes=target, workers=2, progress=False)
    assert min(int((s2.episode_policy == p).sum()) for p in s2.policies()) == target
    assert validate_store(str(out)) == []
