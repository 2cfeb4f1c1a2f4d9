"""`waypoints`: a scripted ARX5 data policy with realistic, smooth joint commands.

Every 0.5-2 s it picks a random joint target inside a fraction of each range and moves
there along a minimum-jerk profile; the segment is stretched when needed so that the
profile's peak speed stays under the speed cap. Gripper: at each new segment it opens
or closes at random. Small AR(1)-correlated noise is added to the arm command (real
teleoperation and controllers are never perfectly smooth), and a final per-step clamp
guarantees the command never moves faster than the cap, noise included.

The random initial pose comes from the env (``initial_pose="random"``, drawn from the
seed the collector passes to ``reset``); the policy starts its first segment from the
pose it finds (``env.joint_positions()``), so it works with pixel observations too.
"""

from __future__ import annotations

import numpy as np


def min_jerk(tau: np.ndarray | float) -> np.ndarray | float:
    """Minimum-jerk position profile s(tau) = 10 tau^3 - 15 tau^4 + 6 tau^5 on [0, 1]."""
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10.0 - 15.0 * tau + 6.0 * tau**2)


# Peak of ds/dtau of the minimum-jerk profile (at tau = 1/2): 30/16.
MIN_JERK_PEAK_SPEED = 1.875


class WaypointsPolicy:
    """Random joint waypoints with minimum-jerk interpolation (see module docstring)."""

    def __init__(
        self,
        env,
        range_fraction: float = 0.8,
        segment_min_s: float = 0.5,
        segment_max_s: float = 2.0,
        max_speed: float = 2.5,
        gripper_toggle_prob: float = 0.3,
        gripper_speed: float = 0.1,
        noise_std: float = 0.01,
        noise_correlation: float = 0.95,
        seed: int = 0,
    ):
        """Build the policy.

        Args:
            env: the `arx5` env (its action bounds, control period and joint positions are used).
            range_fraction: targets are drawn inside this fraction of each joint range, around its centre.
            segment_min_s: shortest time between waypoints, seconds.
            segment_max_s: longest time between waypoints, seconds.
            max_speed: cap on the commanded arm joint speed, rad/s (noise included).
            gripper_toggle_prob: chance per segment that the gripper switches open <-> closed.
            gripper_speed: cap on the commanded gripper slide speed, m/s.
            noise_std: stationary std of the AR(1) command noise, rad.
            noise_correlation: AR(1) coefficient of the noise per control step (0 = white).
            seed: default seed when reset() gets none.
        """
        if not 0.0 < range_fraction <= 1.0:
            raise ValueError(f"range_fraction must be in (0, 1], got {range_fraction}")
        if not 0.0 < segment_min_s <= segment_max_s:
            raise ValueError(f"need 0 < segment_min_s <= segment_max_s, got {segment_min_s}, {segment_max_s}")
        if max_speed <= 0 or gripper_speed <= 0:
            raise ValueError("max_speed and gripper_speed must be > 0")
        if not 0.0 <= noise_correlation < 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1), got {noise_correlation}")
        self.env = env
        base = getattr(env, "unwrapped", env)
        self._base = base
        self.low = np.asarray(base.action_space.low, dtype=np.float64)
        self.high = np.asarray(base.action_space.high, dtype=np.float64)
        self.dt = float(getattr(base, "control_dt", 0.02))
        self.range_fraction = range_fraction
        self.segment_s = (segment_min_s, segment_max_s)
        self.max_speed = float(max_speed)
        self.gripper_toggle_prob = gripper_toggle_prob
        self.gripper_speed = float(gripper_speed)
        self.noise_std = float(noise_std)
        self.rho = float(noise_correlation)
        self.seed = seed
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self.seed if seed is None else seed)
        self._cmd = None  # last command; None until the first call reads the start pose
        self._noise = np.zeros(6)
        self._seg_start = self._seg_goal = None
        self._seg_steps = self._seg_t = 0

    # -- segments --------------------------------------------------------------------
    def _new_segment(self, start: np.ndarray) -> None:
        mid = 0.5 * (self.low + self.high)
        half = 0.5 * (self.high - self.low) * self.range_fraction
        goal = start.copy()
        goal[:6] = self.rng.uniform(mid[:6] - half[:6], mid[:6] + half[:6])
        gripper_open = start[6] > 0.5 * (self.low[6] + self.high[6])
        if self.rng.random() < self.gripper_toggle_prob:
            gripper_open = not gripper_open
        goal[6] = self.high[6] if gripper_open else self.low[6]
        duration = self.rng.uniform(*self.segment_s)
        # Stretch the segment so the min-jerk peak speed (1.875 * distance / T) obeys the caps.
        dist = np.abs(goal - start)
        duration = max(duration, MIN_JERK_PEAK_SPEED * dist[:6].max() / self.max_speed,
                       MIN_JERK_PEAK_SPEED * dist[6] / self.gripper_speed)
        self._seg_start, self._seg_goal = start, goal
        self._seg_steps = max(1, int(np.ceil(duration / self.dt)))
        self._seg_t = 0

    def __call__(self, obs=None, info=None) -> np.ndarray:
        if self._cmd is None:
            self._cmd = np.clip(np.asarray(self._base.joint_positions(), dtype=np.float64), self.low, self.high)
            self._new_segment(self._cmd.copy())
        if self._seg_t >= self._seg_steps:
            self._new_segment(self._seg_goal.copy())
        self._seg_t += 1
        s = min_jerk(self._seg_t / self._seg_steps)
        target = self._seg_start + s * (self._seg_goal - self._seg_start)

        eps = self.rng.standard_normal(6)
        self._noise = self.rho * self._noise + np.sqrt(1.0 - self.rho**2) * self.noise_std * eps
        target[:6] += self._noise

        # Hard per-step clamp: the cap holds for the command actually sent, noise included.
        cap = np.full(7, self.max_speed * self.dt)
        cap[6] = self.gripper_speed * self.dt
        cmd = self._cmd + np.clip(target - self._cmd, -cap, cap)
        cmd = np.clip(cmd, self.low, self.high)
        self._cmd = cmd
        return cmd.astype(np.float32)
