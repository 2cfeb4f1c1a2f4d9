"""Toy environments with exact ground truth, for tests that must run in seconds.

* ``BouncingBallEnv``: pixels (uint8, size x size x 3) of a ball moving at constant
  velocity and bouncing off the walls, plus a paddle on the bottom row moved by three
  discrete actions (noop/left/right). Labels: ball_x, ball_y, ball_vx, ball_vy,
  paddle_x in pixel coordinates.
* ``LinearStateEnv``: a stable linear system ``x' = A x + B u`` with a float32 state
  observation and continuous actions. Labels: s0, s1, ... (the state itself).

Both are deterministic given ``reset(seed=...)`` and pass gymnasium's ``check_env``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_framework.contracts import MAX_FRAME_SIDE

BALL_COLOR = np.array([255, 255, 255], np.uint8)
PADDLE_COLOR = np.array([200, 72, 72], np.uint8)


class BouncingBallEnv(gym.Env):
    """A ball bouncing in a box and a paddle along the bottom, drawn in pixels.

    Args:
        size: image height and width in pixels (at least 16).
        max_steps: steps before the episode is truncated.
        speed: ball speed in pixels per step (the direction is random per episode).
        terminate_on_miss: end the episode (terminated) when the ball reaches the
            bottom away from the paddle; otherwise it just bounces.
        render_mode: None or "rgb_array".
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    label_names = ["ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"]
    #: Labels that are positions in the observation's pixels (`wm data show` draws them).
    pixel_label_names = ["ball_x", "ball_y", "paddle_x"]
    actions = ("noop", "left", "right")

    def __init__(self, size: int = 32, max_steps: int = 100, speed: float = 1.5,
                 terminate_on_miss: bool = False, render_mode: str | None = None):
        if not 16 <= size <= MAX_FRAME_SIDE:
            raise ValueError(f"size must be from 16 to {MAX_FRAME_SIDE}, got {size}")
        self.size, self.max_steps, self.speed = int(size), int(max_steps), float(speed)
        self.terminate_on_miss = bool(terminate_on_miss)
        self.render_mode = render_mode
        self.radius = max(1, self.size // 16)
        self.paddle_half = max(2, self.size // 8)
        self.paddle_speed = max(1, self.size // 16)
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self._reset_state(np.random.default_rng(0))

    def _reset_state(self, rng: np.random.Generator) -> None:
        lo, hi = self.radius + 1, self.size - self.radius - 2
        self.pos = rng.uniform(lo, hi, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        self.vel = self.speed * np.array([np.cos(angle), np.sin(angle)])
        self.vel[np.abs(self.vel) < 0.2 * self.speed] = 0.2 * self.speed  # never stuck on one axis
        self.paddle_x = float(rng.integers(self.paddle_half, self.size - self.paddle_half))
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._reset_state(self.np_random)
        return self._render(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}; actions are 0..2 ({', '.join(self.actions)})")
        move = (0, -1, 1)[int(action)] * self.paddle_speed
        self.paddle_x = float(np.clip(self.paddle_x + move, self.paddle_half, self.size - 1 - self.paddle_half))
        self.pos = self.pos + self.vel
        reward, terminated = 0.0, False
        lo, hi = float(self.radius), float(self.size - 1 - self.radius - 2)  # bottom 2 rows: paddle
        for axis in (0, 1):  # reflect off the walls, mirroring the overshoot
            if self.pos[axis] < lo:
                self.pos[axis], self.vel[axis] = 2 * lo - self.pos[axis], abs(self.vel[axis])
            elif self.pos[axis] > hi:
                self.pos[axis], self.vel[axis] = 2 * hi - self.pos[axis], -abs(self.vel[axis])
                if axis == 1:  # the bottom: did the paddle catch it?
                    caught = abs(self.pos[0] - self.paddle_x) <= self.paddle_half + self.radius
                    reward = 1.0 if caught else 0.0
                    terminated = self.terminate_on_miss and not caught
        self.steps += 1
        truncated = self.steps >= self.max_steps and not terminated
        return self._render(), reward, terminated, truncated, self._info()

    def _info(self) -> dict:
        x, y = self.pos
        vx, vy = self.vel
        return {"labels": {"ball_x": float(x), "ball_y": float(y), "ball_vx": float(vx), "ball_vy": float(vy),
                           "paddle_x": float(self.paddle_x)}}

    def _render(self) -> np.ndarray:
        img = np.zeros((self.size, self.size, 3), np.uint8)
        yy, xx = np.ogrid[: self.size, : self.size]
        ball = (xx - self.pos[0]) ** 2 + (yy - self.pos[1]) ** 2 <= (self.radius + 0.5) ** 2
        img[ball] = BALL_COLOR
        p0, p1 = int(round(self.paddle_x - self.paddle_half)), int(round(self.paddle_x + self.paddle_half))
        img[self.size - 2:, max(p0, 0): p1 + 1] = PADDLE_COLOR
        return img

    def render(self):
        return self._render() if self.render_mode == "rgb_array" else None

    # -- what planning and surprise ask of an env (wm_framework.contracts) -----------------
    def goal_success(self, labels_now: dict, labels_goal: dict) -> bool:
        """Reached: the paddle within one paddle move of the goal's."""
        return abs(labels_now["paddle_x"] - labels_goal["paddle_x"]) <= self.paddle_speed

    def perturb_physical(self, rng: np.random.Generator) -> dict:
        """Move the ball to the opposite side of the box (velocity kept)."""
        before = self.pos.copy()
        lo, hi = self.radius + 1, self.size - self.radius - 3
        self.pos = np.clip(lo + hi - before, lo, hi)
        if np.abs(self.pos - before).max() < self.size / 4:
            self.pos = np.array([lo + (hi - lo) * rng.random(), lo + (hi - lo) * rng.random()])
        return {"pos_before": before.tolist(), "pos_after": self.pos.tolist()}

    @staticmethod
    def perturb_visual(obs: np.ndarray) -> np.ndarray:
        """Paint the white ball green."""
        out = np.array(obs, copy=True)
        white = np.all(out >= 200, axis=-1)
        out[white] = (40, 220, 40)
        return out


class LinearStateEnv(gym.Env):
    """A stable linear dynamical system ``x' = A x + B u`` observed directly.

    A is a fixed block-diagonal rotation scaled by ``decay`` (so states orbit and
    shrink); B is a fixed random matrix. Reward is ``-|x|^2``.

    Args:
        dim: state dimension (observation is float32 of this size).
        action_dim: continuous action dimension (actions in [-1, 1]).
        max_steps: steps before the episode is truncated.
        decay: spectral radius of A (< 1 keeps the system stable).
        render_mode: None (no rendering).
    """

    metadata = {"render_modes": []}

    def __init__(self, dim: int = 4, action_dim: int = 2, max_steps: int = 100, decay: float = 0.95,
                 render_mode: str | None = None):
        if dim < 1 or action_dim < 1:
            raise ValueError("dim and action_dim must be positive")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1) for a stable system, got {decay}")
        self.dim, self.action_dim, self.max_steps = int(dim), int(action_dim), int(max_steps)
        self.render_mode = render_mode
        self.A = np.zeros((dim, dim))
        for i in range(0, dim - 1, 2):
            c, s = np.cos(0.2), np.sin(0.2)
            self.A[i:i + 2, i:i + 2] = [[c, -s], [s, c]]
        if dim % 2:
            self.A[-1, -1] = 1.0
        self.A *= decay
        self.B = np.random.default_rng(12345).normal(0, 0.3, size=(dim, action_dim))
        self.label_names = [f"s{i}" for i in range(dim)]
        self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.x = np.zeros(dim)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = self.np_random.normal(0, 1, size=self.dim)
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action):
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_dim), -1.0, 1.0)
        self.x = self.A @ self.x + self.B @ u
        self.steps += 1
        reward = -float(self.x @ self.x)
        return self._obs(), reward, False, self.steps >= self.max_steps, self._info()

    def _obs(self) -> np.ndarray:
        return self.x.astype(np.float32)

    # -- goals (what planning asks of an env) --------------------------------------------
    def goal_distance(self, labels_now: dict, labels_goal: dict) -> float:
        """Euclidean distance between the two states."""
        return float(np.sqrt(sum((labels_now[n] - labels_goal[n]) ** 2 for n in self.label_names)))

    def goal_success(self, labels_now: dict, labels_goal: dict, tolerance: float = 0.1) -> bool:
        """Reached: within ``tolerance`` per dimension, on average (tolerance * sqrt(dim) in distance)."""
        return self.goal_distance(labels_now, labels_goal) <= tolerance * np.sqrt(self.dim)

    def perturb_physical(self, rng: np.random.Generator, size: float = 2.0) -> dict:
        """Add a jump of norm ``size`` to the state."""
        before = self.x.copy()
        d = rng.normal(size=before.shape)
        self.x = before + size * d / np.linalg.norm(d)
        return {"x_before": before.tolist(), "x_after": self.x.tolist()}

    def _info(self) -> dict:
        return {"labels": {n: float(v) for n, v in zip(self.label_names, self.x)}}
