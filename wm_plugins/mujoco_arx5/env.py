"""ARX5 arm in MuJoCo as a Gymnasium env: 14-D joint state, 7-D joint-position targets.

The MJCF (``arx5.xml`` beside this file) is this project's own primitive-shape model of
the ARX L5 arm. Physics runs at 500 Hz (0.002 s, implicitfast) and the env steps at
50 Hz: each action is held for ``PHYSICS_STEPS_PER_ACTION`` = 10 physics steps, like a
position-controlled arm receiving commands from a 50 Hz policy.

Initial pose: ``reset(options={"qpos": [...7]})`` starts exactly there; otherwise the
``initial_pose`` parameter decides: ``"home"`` (the keyframe) or ``"random"`` (uniform
inside ``initial_pose_fraction`` of each joint range, drawn from the env's seeded RNG,
so a collector that seeds ``reset`` gets reproducible random starts). Velocities start
at zero and the actuators start holding the initial pose.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    # Headless Linux (CI, clusters): MuJoCo picks its GL backend when it is imported;
    # EGL (Mesa) works on CPU-only machines, osmesa is usually not installed.
    os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (after MUJOCO_GL is decided)

from wm_framework.contracts import check_frame_size  # noqa: E402

MJCF_PATH = Path(__file__).with_name("arx5.xml")
GOAL_TOLERANCE_M = 0.02  # a reach counts when the end effector is within 2 cm of the goal's
JOINT_NAMES = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper")
HOME_QPOS = np.array([0.0, 0.251, 0.314, 0.0, 0.0, 0.0, 0.044])
PHYSICS_STEPS_PER_ACTION = 10  # 0.002 s * 10 = 20 ms -> 50 Hz control
LABEL_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_width"]


def load_model() -> "mujoco.MjModel":
    """The ARX5 MjModel (a fresh copy each call)."""
    return mujoco.MjModel.from_xml_path(str(MJCF_PATH))


class Arx5Env(gym.Env):
    """ARX5 arm reaching joint-position targets (no task reward: a data source for world models).

    Observation: float32 ``[qpos(7), qvel(7)]`` (or uint8 pixels ``(H, W, 3)`` when
    ``render_size`` is set). Action: absolute joint-position targets, a Box over the
    joint ranges (radians for joints 1-6, metres for the gripper slide).
    ``info["labels"]``: end-effector position (world frame) and gripper width.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        max_episode_steps: int = 500,
        initial_pose: str = "random",
        initial_pose_fraction: float = 0.5,
        render_size: tuple[int, int] | list[int] | None = None,
        camera: str = "front",
        render_mode: str | None = None,
    ):
        """Build the env.

        Args:
            max_episode_steps: env steps (50 Hz) before the episode is truncated.
            initial_pose: "home" (keyframe) or "random" (uniform in a fraction of each range).
            initial_pose_fraction: fraction of each joint range, around its centre, for random starts.
            render_size: (height, width) to observe pixels instead of the joint state; None = state.
            camera: MJCF camera used for pixels and render().
            render_mode: "rgb_array" or None (Gymnasium convention).
        """
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if initial_pose not in ("home", "random"):
            raise ValueError(f"initial_pose must be 'home' or 'random', got {initial_pose!r}")
        if not 0.0 <= initial_pose_fraction <= 1.0:
            raise ValueError(f"initial_pose_fraction must be in [0, 1], got {initial_pose_fraction}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.max_episode_steps = int(max_episode_steps)
        self.initial_pose = initial_pose
        self.initial_pose_fraction = float(initial_pose_fraction)
        self.camera = camera
        self.render_mode = render_mode
        self.render_size = check_frame_size("arx5 env", "render_size", render_size) if render_size is not None else None
        self.control_dt = self.model.opt.timestep * PHYSICS_STEPS_PER_ACTION
        self.label_names = list(LABEL_NAMES)
        self.joint_names = list(JOINT_NAMES)

        self.joint_low = self.model.jnt_range[:, 0].astype(np.float32).copy()
        self.joint_high = self.model.jnt_range[:, 1].astype(np.float32).copy()
        self.action_space = gym.spaces.Box(self.joint_low, self.joint_high, dtype=np.float32)
        if self.render_size is None:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2 * self.model.nq,), dtype=np.float32)
        else:
            self.reset_to_recorded = None  # a recorded frame does not give the joints: replay instead
            h, w = self.render_size
            self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self._ee_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "ee")
        self._renderer = None
        self._steps = 0

    # -- state -----------------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        """Current qpos (7,) as float64 (policies read this, so they also work with pixel obs)."""
        return self.data.qpos.copy()

    def state(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float32)

    def labels(self) -> dict[str, float]:
        ee = self.data.site_xpos[self._ee_site]
        return {
            "ee_x": float(ee[0]), "ee_y": float(ee[1]), "ee_z": float(ee[2]),
            "gripper_width": float(2.0 * self.data.qpos[6]),
        }

    # -- goals (what planning asks of an env) -----------------------------------------
    def goal_distance(self, labels_now: dict, labels_goal: dict) -> float:
        """End-effector distance to the goal's, in metres."""
        return float(np.sqrt(sum((labels_now[k] - labels_goal[k]) ** 2 for k in ("ee_x", "ee_y", "ee_z"))))

    def goal_success(self, labels_now: dict, labels_goal: dict) -> bool:
        """Reached: the end effector within GOAL_TOLERANCE_M of the goal's."""
        return self.goal_distance(labels_now, labels_goal) <= GOAL_TOLERANCE_M

    # -- what planning, surprise and planning costs ask of an env (wm_framework.contracts) --
    def reset_to_recorded(self, seed: int, recorded_obs) -> tuple[np.ndarray, dict]:
        """Set the arm to a recorded 14-D state directly (joints via reset, velocities written)."""
        state = np.asarray(recorded_obs, np.float64)
        obs, info = self.reset(seed=seed, options={"qpos": state[: self.model.nq]})
        if state.shape[0] >= 2 * self.model.nq:
            self.data.qvel[:] = state[self.model.nq: 2 * self.model.nq]
            mujoco.mj_forward(self.model, self.data)
            obs, info = self._obs(), {"labels": self.labels()}
        return obs, info

    def perturb_physical(self, rng: np.random.Generator, radians: float = 0.4) -> dict:
        """Jump joints 1-6 by +-``radians`` (inside their ranges) via ``data.qpos``; velocities kept."""
        before = self.data.qpos.copy()
        sign = np.where(rng.random(6) < 0.5, -1.0, 1.0)
        q = before.copy()
        lo, hi = self.model.jnt_range[:6, 0], self.model.jnt_range[:6, 1]
        q[:6] = before[:6] + sign * radians
        flip = (q[:6] < lo) | (q[:6] > hi)  # jump the other way where one way leaves the range
        q[:6][flip] = before[:6][flip] - sign[flip] * radians
        self.data.qpos[:6] = np.clip(q[:6], lo, hi)
        mujoco.mj_forward(self.model, self.data)
        return {"qpos_before": before.tolist(), "qpos_after": self.data.qpos.copy().tolist()}

    def goal_feature(self):
        """Forward kinematics for the ``target`` planning cost: raw states ``[N, 14]`` -> end
        effector ``[N, 3]``, aimed at the goal's ``ee_x, ee_y, ee_z`` labels. MuJoCo computes it
        per candidate on a private copy of the model (``mj_kinematics`` takes microseconds)."""
        import torch

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

        return feature, ("ee_x", "ee_y", "ee_z")

    def _obs(self):
        return self.state() if self.render_size is None else self._pixels(*self.render_size)

    # -- gym API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        if options and options.get("qpos") is not None:
            qpos = np.asarray(options["qpos"], dtype=np.float64)
            if qpos.shape != (self.model.nq,):
                raise ValueError(f"options['qpos'] must have {self.model.nq} values, got shape {qpos.shape}")
            qpos = np.clip(qpos, self.joint_low, self.joint_high)
        elif self.initial_pose == "home":
            qpos = HOME_QPOS.copy()
        else:
            mid = 0.5 * (self.joint_low + self.joint_high)
            half = 0.5 * (self.joint_high - self.joint_low) * self.initial_pose_fraction
            qpos = self.np_random.uniform(mid - half, mid + half).astype(np.float64)
        self.data.qpos[:] = qpos
        self.data.ctrl[:] = qpos  # actuators hold the start pose until the first action
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._obs(), {"labels": self.labels()}

    def step(self, action):
        target = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self.joint_low, self.joint_high)
        if target.shape != (self.model.nu,):
            raise ValueError(f"action must have {self.model.nu} values, got {np.asarray(action).shape}")
        self.data.ctrl[:] = target
        mujoco.mj_step(self.model, self.data, nstep=PHYSICS_STEPS_PER_ACTION)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), 0.0, False, truncated, {"labels": self.labels()}

    # -- rendering -------------------------------------------------------------------
    def _pixels(self, height: int, width: int) -> np.ndarray:
        if self._renderer is None or (self._renderer.height, self._renderer.width) != (height, width):
            if self._renderer is not None:
                self._renderer.close()
            self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width)
            self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
            self._renderer = mujoco.Renderer(self.model, height=height, width=width)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render().copy()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        h, w = self.render_size or (240, 320)
        return self._pixels(h, w)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
