"""The five Breakout data policies do what their names say (real ALE, short episodes)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py")

import wm_framework  # noqa: E402
from _atari_util import make_policy, play  # noqa: E402

POLICIES = ["center", "heuristic", "passive", "random_active", "wall_hugger"]


def _returns(env, name: str, seeds, steps: int) -> list[float]:
    policy = make_policy(env, name)
    return [play_score(env, policy, s, steps) for s in seeds]


def play_score(env, policy, seed, steps):
    _, labels, _ = play(env, policy, seed, steps)
    return labels[-1]["score"]


def test_all_registered_and_deterministic_per_seed():
    assert set(POLICIES) <= set(wm_framework.components("policies"))
    env = wm_framework.make_env("breakout", obs_size=[84, 84])
    for name in POLICIES:
        _, _, a1 = play(env, make_policy(env, name), 3, 60)
        _, _, a2 = play(env, make_policy(env, name, seed=99), 3, 60)  # reset(3) overrides the factory seed
        assert a1 == a2, name
        assert all(0 <= a < env.action_space.n for a in a1)


def test_center_keeps_the_paddle_centred():
    env = wm_framework.make_env("breakout")
    _, labels, _ = play(env, make_policy(env, "center"), 0, 400)
    xs = np.array([lab["paddle_x"] for lab in labels[10:]])  # after the first move to the centre
    assert len(xs) > 150
    assert abs(xs.mean() - 79.5) < 4 and xs.std() < 4


def test_passive_never_moves_but_serves():
    env = wm_framework.make_env("breakout")
    _, labels, actions = play(env, make_policy(env, "passive"), 1, 400)
    assert len({lab["paddle_x"] for lab in labels}) == 1
    assert set(actions) <= {0, 1} and 1 in actions  # NOOP, and FIRE to put a ball in play
    assert any(lab["ball_visible"] for lab in labels)
    assert labels[-1]["lives"] < 5  # it lets balls through


def test_wall_hugger_picks_a_wall_per_episode_and_stays():
    env = wm_framework.make_env("breakout", max_episode_steps=150)
    policy = make_policy(env, "wall_hugger")
    ends = []
    for seed in range(8):
        _, labels, _ = play(env, policy, seed, 150)
        tail = [lab["paddle_x"] for lab in labels[-60:]]
        wall = policy.wall
        assert all(x <= 16 for x in tail) if wall == "left" else all(x >= 150 for x in tail), (seed, wall, tail)
        assert any(lab["ball_visible"] for lab in labels)  # it serves once parked
        ends.append(wall)
    assert set(ends) == {"left", "right"}


def test_heuristic_is_a_real_player():
    """Mean return >= 10x random_active's (300-step episodes; 20 full episodes: docs/atari.md)."""
    env = wm_framework.make_env("breakout", max_episode_steps=300)
    seeds = range(8)
    heuristic = _returns(env, "heuristic", seeds, 300)
    random = _returns(env, "random_active", seeds, 300)
    assert np.mean(random) > 0  # the ratio is against a policy that does score
    assert np.mean(heuristic) >= 10 * np.mean(random), (heuristic, random)
    assert min(heuristic) >= 5


def test_label_policies_refuse_envs_without_labels():
    env = wm_framework.make_env("breakout", game="pong")
    for name in ("center", "heuristic", "wall_hugger"):
        with pytest.raises(wm_framework.WMUsageError, match="labels"):
            make_policy(env, name)
    _, _, actions = play(env, make_policy(env, "passive"), 0, 20)
    assert set(actions) == {0}


def test_epsilon_noise_is_seeded_and_leaves_epsilon_zero_unchanged():
    """``epsilon`` replaces the policy's action by a random one from its own stream."""
    import wm_framework
    from wm_framework.plugins import get_registry

    env = wm_framework.make_env("breakout", obs_size=[32, 32])

    def actions(**params):
        pol = get_registry().create("policies", "heuristic", env, **params)
        obs, info = env.reset(seed=4)
        pol.reset(4)
        out = []
        for _ in range(150):
            a = pol(obs, info)
            obs, _, term, trunc, info = env.step(a)
            out.append(a)
        return out

    assert actions() == actions(epsilon=0.0)
    noisy = actions(epsilon=0.3)
    assert noisy == actions(epsilon=0.3) and noisy != actions()
    with pytest.raises(Exception, match="epsilon"):
        get_registry().create("policies", "heuristic", env, epsilon=1.5)
