"""ARX5 arm in MuJoCo: the `arx5` env and the `waypoints` data policy.

MuJoCo is imported only inside the factories, so `wm --help` stays fast and a missing
`mujoco` package marks this plugin unavailable instead of breaking `wm`.
"""

from wm_framework import hookimpl, lazy

WM_REQUIRES = ["mujoco"]
WM_INSTALL_HINT = 'pip install "wm-framework[mujoco]"'


def make_arx5(
    max_episode_steps: int = 500,
    initial_pose: str = "random",
    initial_pose_fraction: float = 0.5,
    render_size: list[int] | None = None,
    camera: str = "front",
    render_mode: str | None = None,
):
    """ARX5 arm (MuJoCo): 14-D joint state, 7-D absolute joint-position targets, 50 Hz.

    Args:
        max_episode_steps: env steps (50 Hz) before truncation.
        initial_pose: "home" or "random" start pose (reset(options={"qpos": ...}) overrides).
        initial_pose_fraction: fraction of each joint range used for random starts.
        render_size: [height, width] to observe pixels (MUJOCO_GL=egl) instead of the state.
        camera: MJCF camera for pixels.
        render_mode: "rgb_array" or None.
    """
    from wm_plugins.mujoco_arx5.env import Arx5Env

    return Arx5Env(max_episode_steps=max_episode_steps, initial_pose=initial_pose,
                   initial_pose_fraction=initial_pose_fraction, render_size=render_size,
                   camera=camera, render_mode=render_mode)


@hookimpl
def register_envs(register):
    """The ARX5 arm."""
    register("arx5", make_arx5, description="ARX5 arm (MuJoCo): 14-D joint state, 7-D joint targets, 50 Hz")


@hookimpl
def register_policies(register):
    """Scripted ARX5 data policy."""
    register("waypoints", lazy("wm_plugins.mujoco_arx5.policy:WaypointsPolicy"),
             description="random joint waypoints, minimum-jerk, speed-capped, random gripper",
             example_env={"type": "arx5", "max_episode_steps": 20})
