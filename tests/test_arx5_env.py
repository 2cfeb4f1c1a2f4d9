"""ARX5 MuJoCo env and the `waypoints` policy: real MuJoCo, small and fast."""

from __future__ import annotations

import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

import wm_framework as wm  # noqa: E402
from wm_framework.plugins import get_registry  # noqa: E402

# REFERENCE §5: (name, axis, range) in joint order, actuator kp/kv/force limit.
TABLE = [
    ("joint1", [0, 0, 1], (-3.14, 3.14), 80, 5, 100),
    ("joint2", [0, 1, 0], (0.0, 3.14), 80, 5, 100),
    ("joint3", [0, 1, 0], (0.0, 3.14), 80, 5, 100),
    ("joint4", [0, 1, 0], (-1.7, 1.7), 40, 5, 100),
    ("joint5", [0, 0, 1], (-1.7, 1.7), 10, 1.5, 100),
    ("joint6", [1, 0, 0], (-3.14, 3.14), 10, 1.5, 100),
    ("gripper", [0, 1, 0], (0.0, 0.044), 40, 5, 10),
]
LINK_MASSES = {"link1": 0.097, "link2": 1.199, "link3": 0.841, "link4": 0.124, "link5": 0.636,
               "link6": 0.441, "finger_left": 0.065, "finger_right": 0.065}
HOME = np.array([0, 0.251, 0.314, 0, 0, 0, 0.044])


@pytest.fixture(scope="module")
def model():
    from wm_plugins.mujoco_arx5.env import load_model

    return load_model()


def test_mjcf_matches_reference_table(model):
    assert (model.nq, model.nv, model.nu) == (7, 7, 7)
    assert model.opt.timestep == pytest.approx(0.002)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    for i, (name, axis, rng, kp, kv, force) in enumerate(TABLE):
        j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        assert j == i, name
        np.testing.assert_allclose(model.jnt_axis[j], axis)
        np.testing.assert_allclose(model.jnt_range[j], rng)
        assert model.actuator_trnid[i, 0] == j
        np.testing.assert_allclose(model.actuator_ctrlrange[i], rng)
        assert model.actuator_gainprm[i, 0] == pytest.approx(kp)  # position actuator: force = kp*(ctrl-q) - kv*qdot
        assert model.actuator_biasprm[i, 2] == pytest.approx(-kv)
        np.testing.assert_allclose(model.actuator_forcerange[i], (-force, force))
    assert model.jnt_type[6] == mujoco.mjtJoint.mjJNT_SLIDE
    for body, mass in LINK_MASSES.items():
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
        assert model.body_mass[b] == pytest.approx(mass), body
        assert model.body_gravcomp[b] == 1.0, body


def _hold_home(model, seconds=2.0):
    data = mujoco.MjData(model)
    data.qpos[:] = HOME
    data.ctrl[:] = HOME
    mujoco.mj_step(model, data, nstep=int(round(seconds / model.opt.timestep)))
    return data.qpos.copy()


def test_holds_home_pose_for_two_seconds(model):
    assert np.abs(_hold_home(model) - HOME)[:6].max() < 0.01


def test_without_gravcomp_the_arm_droops(model):
    """Proves the hold test can fail: gravity compensation is what keeps the pose."""
    from wm_plugins.mujoco_arx5.env import load_model

    m = load_model()
    m.body_gravcomp[:] = 0.0
    assert np.abs(_hold_home(m) - HOME)[:6].max() > 0.01


def test_env_spaces_labels_and_end_effector_site():
    env = wm.make_env("arx5", initial_pose="home", max_episode_steps=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (14,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:7], HOME, atol=1e-6)
    assert env.action_space.shape == (7,)
    np.testing.assert_allclose(env.action_space.high, [3.14, 3.14, 3.14, 1.7, 1.7, 3.14, 0.044], rtol=1e-6)
    assert env.label_names == ["ee_x", "ee_y", "ee_z", "gripper_width"]
    assert info["labels"]["gripper_width"] == pytest.approx(0.088)
    site = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "ee")
    np.testing.assert_allclose(env.model.site_pos[site], [0.158, 0, 0])
    assert env.model.site_bodyid[site] == mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "link6")
    assert env.control_dt == pytest.approx(0.02)
    steps = 0
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
    assert steps == 3 and not terminated


def test_reset_options_and_seeded_random_start():
    env = wm.make_env("arx5")
    q = np.array([0.3, 1.0, 0.5, -0.2, 0.1, 0.4, 0.01])
    obs, _ = env.reset(seed=0, options={"qpos": q})
    np.testing.assert_allclose(obs[:7], q, atol=1e-6)
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(wm.WMUsageError):
        wm.make_env("arx5", initial_pose="sideways")


def test_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    check_env(wm.make_env("arx5", max_episode_steps=20), skip_render_check=True)


def _roll(seed, steps=300, **params):
    env = wm.make_env("arx5", max_episode_steps=steps)
    policy = get_registry().create("policies", "waypoints", env, **params)
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    start = env.joint_positions()
    actions, states = [], [obs]
    for _ in range(steps):
        a = policy(obs, info)
        actions.append(a)
        obs, *_, info = env.step(a)
        states.append(obs)
    return start, np.array(actions), np.array(states), env


def test_waypoints_respects_speed_cap_and_moves():
    start, actions, states, env = _roll(seed=3, max_speed=2.0)
    cmds = np.vstack([start[None].astype(np.float32), actions])
    speed = np.abs(np.diff(cmds[:, :6], axis=0)) / env.control_dt
    assert speed.max() <= 2.0 + 1e-4
    assert speed.max() > 1.0  # it does move fast, not trivially slow
    assert np.all(actions >= env.action_space.low) and np.all(actions <= env.action_space.high)
    assert np.ptp(actions[:, :6], axis=0).min() > 0.2  # every joint travels
    assert set(np.round(actions[:, 6], 3)) - {0.0, 0.044}  # the gripper moves between its ends
    # The arm tracks the smooth commands (min-jerk + position control).
    assert np.abs(states[1:, :6] - actions[:, :6]).mean() < 0.1


def test_waypoints_is_deterministic_per_seed():
    _, a1, _, _ = _roll(seed=1, steps=60)
    _, a2, _, _ = _roll(seed=1, steps=60)
    _, a3, _, _ = _roll(seed=2, steps=60)
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, a3)


def test_pixel_observations_when_gl_works():
    try:
        env = wm.make_env("arx5", render_size=[48, 64], initial_pose="home")
        obs, _ = env.reset(seed=0)
    except Exception as e:  # no working GL backend on this machine
        pytest.skip(f"MuJoCo rendering unavailable: {e}")
    assert obs.shape == (48, 64, 3) and obs.dtype == np.uint8
    assert obs.std() > 5  # an actual picture, not a blank buffer
    obs2, *_ = env.step(np.array([1.5, 1.2, 0.8, 0, 0, 0, 0.0], dtype=np.float32))
    for _ in range(10):
        obs2, *_ = env.step(np.array([1.5, 1.2, 0.8, 0, 0, 0, 0.0], dtype=np.float32))
    assert np.abs(obs2.astype(int) - obs.astype(int)).mean() > 0.5  # the arm moved on screen
    env.close()
