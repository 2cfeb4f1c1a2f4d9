"""Violation of expectation and straightness: real Breakout teleports, exact toy dynamics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _plan_util import Identity, LinearStep
from wm_framework.model import ActionSpec, WorldModel
from wm_framework.stages.physics.stage import (SurpriseConfig, paired_statistics, perturbation_trials, straightness,
                                       surprise_curves)
from wm_framework.stages.plan import envs as wenv

RED = np.array([200, 72, 72])


def _ball_in_pixels(frame):
    """Centre of the red ball on a native frame, searched between the bricks and the paddle."""
    red = np.all(frame == RED, axis=-1)
    red[:95] = False
    red[187:] = False
    ys, xs = np.nonzero(red)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def _serve(env, seed=1):
    env.reset(seed=seed)
    obs, *_, info = env.step(1)  # FIRE
    for _ in range(200):
        obs, _, _, _, info = env.step(0)
        lab = info["labels"]
        if lab["ball_visible"] and 100 < lab["ball_y"] < 150:
            return obs, info
    pytest.fail("no ball in play")


def test_breakout_teleport_moves_the_ball_in_ram_labels_and_pixels():
    import wm_framework

    env = wm_framework.make_env("breakout")
    _, info = _serve(env)
    before = info["labels"]
    # Where the ball would be one step later without the teleport: from a copy of the emulator.
    state = env.unwrapped.ale.cloneState()
    _, _, _, _, free = env.step(0)
    env.unwrapped.ale.restoreState(state)
    what = env.perturb_physical(np.random.default_rng(0))
    assert what is not None
    obs, _, _, _, info = env.step(0)
    after = info["labels"]
    jump = np.hypot(after["ball_x"] - free["labels"]["ball_x"], after["ball_y"] - free["labels"]["ball_y"])
    assert jump > 30, (before, free["labels"], after)
    seen = _ball_in_pixels(obs)
    assert seen is not None
    assert abs(seen[0] - after["ball_x"]) <= 1.0 and abs(seen[1] - after["ball_y"]) <= 1.0
    env.close()


def test_breakout_teleport_is_refused_without_a_ball_in_play():
    import wm_framework

    env = wm_framework.make_env("breakout")
    env.reset(seed=0)  # before FIRE there is no ball
    assert env.perturb_physical(np.random.default_rng(0)) is None
    env.close()


def test_capabilities_are_offered_by_breakout_only_among_atari_games():
    import wm_framework
    from wm_framework.contracts import env_capabilities

    breakout, pong = wm_framework.make_env("breakout"), wm_framework.make_env("breakout", game="pong")
    assert env_capabilities(breakout) == ["goal_success", "perturb_physical", "perturb_visual"]
    assert env_capabilities(pong) == []  # Breakout's RAM addresses must never be written into Pong
    with pytest.raises(wm_framework.WMUsageError, match="offers no goal_success"):
        wenv.success_fn(pong, "breakout")
    breakout.close()
    pong.close()


def test_recolour_changes_ball_and_paddle_only():
    import wm_framework

    env = wm_framework.make_env("breakout")
    obs, _ = _serve(env)
    out = env.perturb_visual(obs)
    changed = np.any(out != obs, axis=-1)
    ys, _ = np.nonzero(changed)
    assert changed.sum() > 8  # ball (8 px) + paddle
    assert ys.min() >= 63  # the red top bricks are untouched
    assert np.all(out[changed] == [72, 72, 200])
    env.close()


@pytest.fixture(scope="module")
def linear_store(tmp_path_factory):
    from wm_framework.data.collect import collect
    from wm_framework.plugins import reset_registry

    reset_registry()
    path = tmp_path_factory.mktemp("surprise") / "lin.zarr"
    return collect(str(path), env={"type": "linear_state", "max_steps": 30}, policies=[{"type": "random"}],
                   episodes=4, progress=False)


def test_surprise_spikes_at_a_teleport_under_exact_dynamics(linear_store):
    env = wenv.make_env_for_store(linear_store)
    raw = env.unwrapped
    model = WorldModel(Identity(raw.dim), LinearStep(raw.A, raw.B), ActionSpec("continuous", raw.action_dim, 1)).eval()
    cfg = SurpriseConfig(episodes=4, length=8, perturb_at=4)
    built = perturbation_trials(env, "linear_state", linear_store, np.arange(linear_store.num_episodes), cfg, 1,
                                np.random.default_rng(0))
    assert built["kinds"] == ["physical"]  # a state observation has no colours to change
    assert all(t["info"]["replay_exact"] for t in built["trials"]["clean"])
    curves = {k: surprise_curves(model, np.stack([t["frames"] for t in v]), np.stack([t["blocks"] for t in v]))
              for k, v in built["trials"].items()}
    clean, phys = curves["clean"], curves["physical"]
    assert np.isnan(clean[:, 0]).all()
    assert np.nanmax(clean) < 1e-8  # exact model: nothing is surprising
    assert np.all(phys[:, 4] > 0.1)  # the kick of norm 2 shows up at the perturbed frame
    others = np.delete(phys[:, 1:], 3, axis=1)
    assert np.all(phys[:, 4] > 1e3 * others.max(axis=1) + 1e-6)
    stats = paired_statistics(clean, phys, 4)
    assert stats["ratio_at_perturbation"] > 1e3 and stats["p_value"] <= 0.0625  # 4 tasks: the smallest one-sided p


def test_straightness_of_known_trajectories():
    t = torch.arange(6.0)[None, :, None]
    line = t * torch.tensor([1.0, 2.0, -1.0])
    assert straightness(line) == pytest.approx(1.0)
    zigzag = torch.stack([torch.arange(6.0), torch.tensor([0.0, 1, 0, 1, 0, 1])], -1)[None]
    assert straightness(zigzag) == pytest.approx(0.0, abs=1e-6)
    back_and_forth = torch.tensor([0.0, 1, 0, 1, 0])[None, :, None]
    assert straightness(back_and_forth) == pytest.approx(-1.0)


def test_breakout_trials_replay_exactly_and_differ_only_after_the_perturbation(tmp_path):
    from wm_framework.data.collect import collect

    store = collect(str(tmp_path / "bo.zarr"), env={"type": "breakout", "obs_size": [105, 80]},
                    policies=[{"type": "heuristic"}], episodes=1, max_steps=120, progress=False)
    env = wenv.make_env_for_store(store)
    cfg = SurpriseConfig(episodes=2, length=8, perturb_at=4)
    built = perturbation_trials(env, "breakout", store, np.arange(store.num_episodes), cfg, 2, np.random.default_rng(3))
    env.close()
    assert built["kinds"] == ["physical", "visual"]
    for clean, phys, vis in zip(*(built["trials"][k] for k in ("clean", "physical", "visual"))):
        assert clean["info"]["replay_exact"]
        c, ph, vi = clean["frames"], phys["frames"], vis["frames"]
        start = int(store.episode_starts[clean["episode"]]) + clean["start_row"]
        np.testing.assert_array_equal(c, store.read("obs", start, start + 15)[::2])  # replay == recording
        np.testing.assert_array_equal(ph[:4], c[:4])
        assert np.any(ph[4] != c[4])  # the ball jumped
        np.testing.assert_array_equal(vi[:4], c[:4])
        assert np.any(vi[4] != c[4]) and np.all(vi[4].sum(-1) == c[4].sum(-1))  # a channel swap: same brightness
        assert phys["info"]["perturbation"]["ram_after"] != phys["info"]["perturbation"]["ram_before"]


def test_arx5_reset_teleport_success_and_end_effector_feature(tmp_path):
    from wm_framework.data.collect import collect

    store = collect(str(tmp_path / "arm.zarr"), env={"type": "arx5", "max_episode_steps": 20}, policies=[{"type": "waypoints"}],
                    episodes=1, progress=False)
    env = wenv.make_env_for_store(store)
    obs, info, exact = wenv.reset_to_row(env, store, 0, 12)
    assert exact  # qpos + qvel restored from the recording
    ee = np.array([info["labels"][k] for k in ("ee_x", "ee_y", "ee_z")])
    feature, names = wenv.goal_feature(env, "arx5")
    assert names == ("ee_x", "ee_y", "ee_z")
    np.testing.assert_allclose(feature(torch.as_tensor(obs[None]))[0].numpy(), ee, atol=1e-6)
    success, distance = wenv.success_fn(env, "arx5"), wenv.distance_fn(env)
    assert success(info["labels"], info["labels"]) and distance(info["labels"], info["labels"]) == 0.0
    env.perturb_physical(np.random.default_rng(0))
    moved = env.unwrapped.labels()
    assert not success(moved, info["labels"])  # a 0.4 rad jump moves the end effector by more than 2 cm
    assert distance(moved, info["labels"]) > 0.02
    env.close()
