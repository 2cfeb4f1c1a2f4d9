"""What planning and surprise need from an environment that the core does not know by name.

* **Re-creating** the env of a store (``store.env = {"name", "params"}``) and **resetting it
  to a recorded row**: reset with the episode's seed and replay the recorded actions
  (exact for deterministic envs: ALE with ``repeat_action_probability=0``, MuJoCo, the toy
  envs); the ARX5 arm is set directly from the recorded state instead (faster, and exact).
* **Success criteria** ``success(labels_now, labels_goal) -> bool``: an env may define
  ``goal_success(labels_now, labels_goal)`` itself (looked up on the env and on
  ``env.unwrapped``; the ARX5 arm does: end effector within 2 cm); otherwise :data:`SUCCESS`
  supplies one by env name (Breakout: paddle within 4 native pixels of the goal's). An env
  with ``goal_distance(labels_now, labels_goal) -> float`` also gets the mean final
  distance to the goal reported.
* **Perturbations** for violation-of-expectation tests, applied from outside the env:
  physical ones move an object (Breakout: the ball, by writing the emulator RAM; ARX5:
  the arm's joints, via ``data.qpos``), visual ones recolour an object in the observation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from wm_framework.errors import WMUsageError


# ----------------------------------------------------------------------------- env from a store
def make_env_for_store(store, **overrides):
    """The store's env (same name and params), optionally with some params overridden."""
    from wm_framework import make_env

    spec = store.env or {}
    if not spec.get("name"):
        raise WMUsageError(f"store '{store.path}' does not record its env (attrs.env.name); cannot re-create it")
    params = dict(spec.get("params") or {})
    params.update(overrides)
    return make_env(spec["name"], **params)


def env_name(store) -> str:
    return str((store.env or {}).get("name", ""))


def reset_to_row(env, store, episode: int, row: int):
    """Bring ``env`` to the state of ``row`` (within ``episode``) of ``store``.

    Returns ``(obs, info, exact)`` where ``exact`` says whether the env's observation
    equals the recorded one (a non-deterministic env or a changed plugin breaks it).
    """
    start = int(store.episode_starts[episode])
    seed = int(store.episode_seed[episode])
    recorded = store.read("obs", start + row, start + row + 1)[0]
    name = env_name(store)
    if name in FAST_RESET:
        obs, info = FAST_RESET[name](env, seed, recorded)
    else:
        obs, info = env.reset(seed=seed)
        if row > 0:
            for a in store.read("action", start, start + row):
                obs, _, term, trunc, info = env.step(_env_action(a))
                if term or trunc:
                    break
    return obs, info, _same_obs(obs, recorded)


def _env_action(a):
    a = np.asarray(a)
    return int(a) if a.dtype.kind in "iu" else a.astype(np.float32)


def _same_obs(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iu":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a, b, atol=1e-4))


def _arx5_reset(env, seed: int, recorded_state):
    """ARX5 from its recorded 14-D state: joints via reset(options qpos), velocities set directly."""
    import mujoco

    state = np.asarray(recorded_state, np.float64)
    obs, info = env.reset(seed=seed, options={"qpos": state[:7]})
    raw = env.unwrapped
    if state.shape[0] >= 14:
        raw.data.qvel[:] = state[7:14]
        mujoco.mj_forward(raw.model, raw.data)
        obs, info = raw._obs(), {"labels": raw.labels()}
    return obs, info


# Per-env ways to reach a recorded state without replaying (value: fn(env, seed, recorded_obs)).
FAST_RESET: dict[str, Callable] = {"arx5": _arx5_reset}


# ----------------------------------------------------------------------------- success criteria
def _breakout_success(env, tolerance_native_px: float = 4.0):
    # Labels are in the returned observation's pixels; the criterion is in native ones.
    scale = env.observation_space.shape[1] / 160.0

    def success(now: dict, goal: dict) -> bool:
        return abs(now["paddle_x"] - goal["paddle_x"]) <= tolerance_native_px * scale
    return success


def _bouncing_ball_success(env):
    tol = float(getattr(env.unwrapped, "paddle_speed", 1))

    def success(now: dict, goal: dict) -> bool:
        return abs(now["paddle_x"] - goal["paddle_x"]) <= tol
    return success


#: env name -> factory(env) -> success(labels_now, labels_goal). Used when the env has no goal_success.
SUCCESS: dict[str, Callable] = {
    "breakout": _breakout_success,
    "bouncing_ball": _bouncing_ball_success,
}


def success_fn(env, name: str) -> Callable[[dict, dict], bool]:
    """The env's own ``goal_success`` if it has one, else the built-in criterion for ``name``."""
    for obj in (env, getattr(env, "unwrapped", env)):
        fn = getattr(obj, "goal_success", None)
        if callable(fn):
            return fn
    if name not in SUCCESS:
        raise WMUsageError(f"env '{name}' has no goal_success(labels_now, labels_goal) and no built-in success "
                           f"criterion; built-in: {', '.join(sorted(SUCCESS))}")
    return SUCCESS[name](env)


def distance_fn(env) -> Callable[[dict, dict], float] | None:
    """The env's ``goal_distance(labels_now, labels_goal) -> float`` (e.g. metres of end-effector
    error), or None when the env measures no distance to a goal."""
    for obj in (env, getattr(env, "unwrapped", env)):
        fn = getattr(obj, "goal_distance", None)
        if callable(fn):
            return fn
    return None


# ----------------------------------------------------------------------------- perturbations
BREAKOUT_RAM_BALL_X, BREAKOUT_RAM_BALL_Y = 99, 101


def breakout_teleport_ball(env, rng: np.random.Generator, dx: int = 40, dy: int = 30) -> dict | None:
    """Move the ball by about (dx, dy) native pixels by writing ``ram[99]``/``ram[101]``.

    Only while the ball is in play (``ram[101] != 0``); the direction of each jump is
    chosen so the ball stays inside the field below the bricks. Returns the RAM before
    and after, or None when no ball is in play. The next ``step`` shows the ball there.
    """
    ale = env.unwrapped.ale
    ram = ale.getRAM()
    x, y = int(ram[BREAKOUT_RAM_BALL_X]), int(ram[BREAKOUT_RAM_BALL_Y])
    if y == 0:
        return None
    # Field in RAM units: ball_x_px = ram99 - 48.5 in [8, 151]; ball_y_px = ram101 + 10.5, rows ~95..175.
    xs = [v for v in (x - dx, x + dx) if 60 <= v <= 195] or [int(np.clip(x, 60, 195))]
    ys = [v for v in (y - dy, y + dy) if 85 <= v <= 165] or [int(np.clip(y, 85, 165))]
    nx, ny = int(xs[rng.integers(len(xs))]), int(ys[rng.integers(len(ys))])
    ale.setRAM(BREAKOUT_RAM_BALL_X, nx)
    ale.setRAM(BREAKOUT_RAM_BALL_Y, ny)
    return {"ram_before": [x, y], "ram_after": [nx, ny]}


def arx5_teleport_arm(env, rng: np.random.Generator, radians: float = 0.4) -> dict:
    """Jump joints 1-6 by +-``radians`` (inside their ranges) via ``data.qpos``; velocities kept."""
    import mujoco

    raw = env.unwrapped
    before = raw.data.qpos.copy()
    sign = np.where(rng.random(6) < 0.5, -1.0, 1.0)
    q = before.copy()
    lo, hi = raw.model.jnt_range[:6, 0], raw.model.jnt_range[:6, 1]
    q[:6] = before[:6] + sign * radians
    flip = (q[:6] < lo) | (q[:6] > hi)  # jump the other way where one way leaves the range
    q[:6][flip] = before[:6][flip] - sign[flip] * radians
    raw.data.qpos[:6] = np.clip(q[:6], lo, hi)
    mujoco.mj_forward(raw.model, raw.data)
    return {"qpos_before": before.tolist(), "qpos_after": raw.data.qpos.copy().tolist()}


def bouncing_ball_teleport(env, rng: np.random.Generator) -> dict:
    """Move the toy ball to the opposite side of the box (velocity kept)."""
    raw = env.unwrapped
    before = raw.pos.copy()
    lo, hi = raw.radius + 1, raw.size - raw.radius - 3
    raw.pos = np.clip(lo + hi - before, lo, hi)
    if np.abs(raw.pos - before).max() < raw.size / 4:
        raw.pos = np.array([lo + (hi - lo) * rng.random(), lo + (hi - lo) * rng.random()])
    return {"pos_before": before.tolist(), "pos_after": raw.pos.tolist()}


def linear_state_kick(env, rng: np.random.Generator, size: float = 2.0) -> dict:
    """Add a jump of norm ``size`` to the toy linear system's state."""
    raw = env.unwrapped
    before = raw.x.copy()
    d = rng.normal(size=before.shape)
    raw.x = before + size * d / np.linalg.norm(d)
    return {"x_before": before.tolist(), "x_after": raw.x.tolist()}


#: env name -> fn(env, rng) -> description or None (not applicable now). Applied between two steps.
PHYSICAL_PERTURBATIONS: dict[str, Callable] = {
    "breakout": breakout_teleport_ball,
    "arx5": arx5_teleport_arm,
    "bouncing_ball": bouncing_ball_teleport,
    "linear_state": linear_state_kick,
}


def recolour_red_objects(obs: np.ndarray, below_row_fraction: float = 63 / 210) -> np.ndarray:
    """Breakout: swap the red and blue channels of the ball/paddle red ``(200, 72, 72)``.

    Works on resized frames too: a resize blends the red with the black background,
    and swapping channels commutes with that blend. Rows above ``below_row_fraction``
    of the height (the red top brick row) are left alone, so only ball and paddle change.
    """
    out = np.array(obs, copy=True)
    if out.ndim != 3 or out.shape[-1] != 3:
        return out
    r, g, b = (out[..., i].astype(np.int16) for i in range(3))
    red = (r > g + 20) & (np.abs(g - b) <= 8)
    red[: int(round(below_row_fraction * out.shape[0]))] = False
    out[red] = out[red][:, ::-1]
    return out


def recolour_white_ball(obs: np.ndarray) -> np.ndarray:
    """Toy bouncing ball: paint the white ball green."""
    out = np.array(obs, copy=True)
    white = np.all(out >= 200, axis=-1)
    out[white] = (40, 220, 40)
    return out


#: env name -> fn(obs) -> recoloured obs (pixel observations only).
VISUAL_PERTURBATIONS: dict[str, Callable] = {
    "breakout": recolour_red_objects,
    "bouncing_ball": recolour_white_ball,
}


# ----------------------------------------------------------------------------- task features
def arx5_end_effector_feature() -> Callable:
    """Forward kinematics for planning costs: raw ARX5 states ``[N, 14]`` -> end effector ``[N, 3]``.

    MuJoCo computes it per candidate (``mj_kinematics`` takes microseconds); the goal of
    a :class:`~wm_framework.planning.cem.TargetCost` is then an end-effector position.
    """
    import mujoco
    import torch
    from wm_plugins.mujoco_arx5.env import load_model

    model = load_model()
    data = mujoco.MjData(model)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "ee")

    def feature(states: "torch.Tensor") -> "torch.Tensor":
        q = states[:, : model.nq].detach().double().cpu().numpy()
        out = np.empty((len(q), 3))
        for i, qi in enumerate(q):
            data.qpos[:] = qi
            mujoco.mj_kinematics(model, data)
            out[i] = data.site_xpos[site]
        return torch.as_tensor(out, dtype=states.dtype, device=states.device)

    return feature


#: env name -> (feature factory, label names of the goal target) for the "target" planning cost.
TARGET_FEATURES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "arx5": (arx5_end_effector_feature, ("ee_x", "ee_y", "ee_z")),
}
