"""The Breakout env on the real ALE: spaces, check_env, labels against the pixels, NaN rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("ale_py")

import wm_framework  # noqa: E402
from _atari_util import (  # noqa: E402
    ball_native,
    ball_resized,
    make_policy,
    paddle_native,
    paddle_resized,
    play,
)
from wm_framework.errors import WMUsageError  # noqa: E402

LABELS = ["ball_x", "ball_y", "paddle_x", "ball_vx", "ball_vy", "ball_visible", "lives", "score"]


def test_registered_with_spaces_and_check_env():
    from gymnasium.utils.env_checker import check_env

    env = wm_framework.make_env("breakout")
    assert env.label_names == LABELS
    assert env.observation_space.shape == (210, 160, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 4 and env.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    check_env(env, skip_render_check=True)

    small = wm_framework.make_env("breakout", obs_size=[84, 64], grayscale=True)
    check_env(small, skip_render_check=True)
    obs, info = small.reset(seed=0)
    assert obs.shape == (84, 64, 1) and obs.dtype == np.uint8 and small.observation_space.contains(obs)
    assert set(info["labels"]) == set(LABELS)


@pytest.mark.parametrize(
    "params",
    [{"obs_size": [84]}, {"obs_size": [0, 84]}, {"frameskip": 0}, {"game": "brakeout"}, {"max_episode_steps": -1}],
)
def test_bad_params_are_usage_errors(params):
    with pytest.raises(WMUsageError):
        wm_framework.make_env("breakout", **params)


def test_unknown_param_names_are_rejected():
    with pytest.raises(WMUsageError, match="obs_size"):
        wm_framework.make_env("breakout", obs_sise=[84, 84])


def _compare(frames, labels, locate_ball, locate_paddle):
    """Fractions of ball/paddle pixel detections that agree with the labels within 2 px."""
    ball_hits, ball_found, paddle_hits, paddle_found, visible_flags = 0, 0, 0, 0, []
    for frame, lab in zip(frames, labels):
        found = locate_ball(frame)
        if found is not None:
            ball_found += 1
            visible_flags.append(lab["ball_visible"])
            if not math.isnan(lab["ball_x"]):
                ball_hits += abs(found[0] - lab["ball_x"]) <= 2 and abs(found[1] - lab["ball_y"]) <= 2
        px = locate_paddle(frame, lab)
        if px is not None:
            paddle_found += 1
            paddle_hits += abs(px - lab["paddle_x"]) <= 2
    return ball_hits, ball_found, paddle_hits, paddle_found, np.array(visible_flags)


def test_labels_match_pixels_native():
    env = wm_framework.make_env("breakout")
    frames, labels = [], []
    for seed, name in [(0, "heuristic"), (1, "random_active"), (2, "wall_hugger")]:
        f, lab, _ = play(env, make_policy(env, name), seed, 500)
        frames += f
        labels += lab
    ball_hits, ball_found, paddle_hits, paddle_found, visible = _compare(
        frames, labels, ball_native, lambda fr, lab: paddle_native(fr)
    )
    assert ball_found > 300 and paddle_found > 500  # enough evidence
    assert ball_hits >= 0.95 * ball_found
    assert visible.mean() >= 0.95  # where the pixels show a ball, the label says visible
    assert paddle_hits >= 0.95 * paddle_found
    # The other way round: a label "visible" in the clean rows is a ball in the pixels.
    clean = [i for i, lab in enumerate(labels) if lab["ball_visible"] and 96 <= lab["ball_y"] <= 184]
    assert len(clean) > 200
    assert np.mean([ball_native(frames[i]) is not None for i in clean]) >= 0.95
    # Paddle centre moves one pixel per RAM unit: the labels span the whole field.
    xs = [lab["paddle_x"] for lab in labels]
    assert min(xs) < 25 and max(xs) > 140


def test_labels_match_pixels_resized():
    env = wm_framework.make_env("breakout", obs_size=[84, 84])
    frames, labels, _ = play(env, make_policy(env, "heuristic"), 3, 700)

    def paddle(frame, lab):
        # skip frames where the paddle hides partly behind the right wall or the ball is near it
        if lab["paddle_x"] > 70 or (not math.isnan(lab["ball_y"]) and lab["ball_y"] > 70):
            return None
        return paddle_resized(frame)

    ball_hits, ball_found, paddle_hits, paddle_found, visible = _compare(frames, labels, ball_resized, paddle)
    assert ball_found > 200 and paddle_found > 200
    assert ball_hits >= 0.95 * ball_found
    assert visible.mean() >= 0.95
    assert paddle_hits >= 0.95 * paddle_found


def test_nan_rules_and_velocity_definition():
    env = wm_framework.make_env("breakout")
    obs, info = env.reset(seed=5)
    lab = info["labels"]
    for k in ("ball_x", "ball_y", "ball_vx", "ball_vy"):
        assert math.isnan(lab[k]), k
    assert lab["ball_visible"] == 0 and lab["lives"] == 5 and lab["score"] == 0 and not math.isnan(lab["paddle_x"])

    policy = make_policy(env, "random_active")
    policy.reset(5)
    prev, score, saw_life_loss, saw_velocity, first_after_serve = lab, 0.0, False, 0, 0
    for _ in range(3000):
        obs, reward, term, trunc, info = env.step(policy(obs, info))
        lab = info["labels"]
        score += reward
        assert lab["score"] == score
        if math.isnan(lab["ball_x"]):  # no ball: nothing about it is defined, nothing stale
            assert all(math.isnan(lab[k]) for k in ("ball_y", "ball_vx", "ball_vy")) and lab["ball_visible"] == 0
        elif math.isnan(prev["ball_x"]) or lab["lives"] != prev["lives"]:
            assert math.isnan(lab["ball_vx"]) and math.isnan(lab["ball_vy"])  # first step of a serve
            first_after_serve += 1
        else:
            assert lab["ball_vx"] == lab["ball_x"] - prev["ball_x"]
            assert lab["ball_vy"] == lab["ball_y"] - prev["ball_y"]
            saw_velocity += 1
        saw_life_loss |= lab["lives"] < prev["lives"]
        prev = lab
        if term or trunc:
            break
    assert term and saw_life_loss and saw_velocity > 50 and first_after_serve >= 5  # all five serves


def test_velocities_scale_with_resize():
    native = wm_framework.make_env("breakout")
    small = wm_framework.make_env("breakout", obs_size=[105, 80])
    pol_a, pol_b = make_policy(native, "heuristic"), make_policy(small, "heuristic")
    _, lab_a, act_a = play(native, pol_a, 11, 150)
    _, lab_b, act_b = play(small, pol_b, 11, 150)
    assert act_a == act_b  # the policy thinks in native pixels, so it plays the same game
    checked = 0
    for a, b in zip(lab_a, lab_b):
        if not math.isnan(a["ball_vx"]):
            assert b["ball_vx"] == pytest.approx(a["ball_vx"] / 2)
            assert b["ball_vy"] == pytest.approx(a["ball_vy"] / 2)
            assert b["ball_x"] == pytest.approx((a["ball_x"] + 0.5) / 2 - 0.5)
            checked += 1
    assert checked > 50


def test_seed_determinism():
    def run(seed):
        env = wm_framework.make_env("breakout", obs_size=[42, 32])
        frames, labels, actions = play(env, make_policy(env, "random_active"), seed, 120)
        return np.stack(frames), actions, [lab["ball_x"] for lab in labels]

    f1, a1, b1 = run(7)
    f2, a2, b2 = run(7)
    f3, a3, _ = run(8)
    assert a1 == a2 and np.array_equal(f1, f2)
    assert np.array_equal(np.nan_to_num(b1, nan=-1), np.nan_to_num(b2, nan=-1))
    assert a1 != a3


def test_other_games_run_with_empty_labels():
    from gymnasium.utils.env_checker import check_env

    env = wm_framework.make_env("breakout", game="pong", obs_size=[64, 64], max_episode_steps=30)
    check_env(env, skip_render_check=True)
    assert env.label_names == [] and env.env_id == "ALE/Pong-v5" and env.action_space.n == 6
    policy = make_policy(env, "random_active")
    frames, labels, _ = play(env, policy, 0, 100)
    assert len(frames) == 31  # truncated by max_episode_steps
    assert all(lab == {} for lab in labels)
    assert frames[-1].shape == (64, 64, 3) and not np.array_equal(frames[0], frames[-1])
    with pytest.raises(WMUsageError, match="breakout"):
        make_policy(env, "heuristic")  # needs Breakout labels
