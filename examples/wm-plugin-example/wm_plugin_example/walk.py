"""DriftWalkEnv: x' = x + 0.1 * clip(a, -1, 1) + noise; a gymnasium.Env with labels.

Besides the gymnasium API it offers two env capabilities (wm_framework.contracts), so
`wm plan` and `wm surprise` work on it without any change to wm-framework:
``goal_success`` (and ``goal_distance``) for planning, ``perturb_physical`` for surprise.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class DriftWalkEnv(gym.Env):
    """A point on a line. Observation [x, v]; action a in [-1, 1] sets the velocity.

    Args:
        noise: standard deviation of the position noise per step.
        max_steps: episode length (then truncated).
    """

    metadata = {"render_modes": []}

    def __init__(self, noise: float = 0.01, max_steps: int = 50):
        self.noise = float(noise)
        self.max_steps = int(max_steps)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.label_names = ["x"]
        self._x = 0.0
        self._v = 0.0
        self._t = 0

    def _obs(self):
        return np.array([self._x, self._v], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = float(self.np_random.uniform(-1, 1))
        self._v, self._t = 0.0, 0
        return self._obs(), {"labels": {"x": self._x}}

    # -- env capabilities: plain methods, found by name -----------------------------------
    def goal_distance(self, labels_now: dict, labels_goal: dict) -> float:
        """How far the point is from the goal's position."""
        return abs(labels_now["x"] - labels_goal["x"])

    def goal_success(self, labels_now: dict, labels_goal: dict) -> bool:
        """Reached: within half a step (0.05) of the goal's position."""
        return self.goal_distance(labels_now, labels_goal) <= 0.05

    def perturb_physical(self, rng: np.random.Generator) -> dict:
        """Teleport the point by +-1 (a jump ten full steps long)."""
        before = self._x
        self._x += float(rng.choice([-1.0, 1.0]))
        return {"x_before": before, "x_after": self._x}

    def step(self, action):
        self._v = 0.1 * float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1, 1))
        self._x += self._v + self.noise * float(self.np_random.normal())
        self._t += 1
        truncated = self._t >= self.max_steps
        return self._obs(), -abs(self._x), False, truncated, {"labels": {"x": self._x}}
