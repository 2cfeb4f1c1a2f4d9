"""Atari plugin: ALE games through gymnasium, with ground truth for Breakout.

Registers the env ``breakout`` (any ALE game via its ``game`` parameter; labels for
Breakout only) and the five data policies of the LeWM Breakout data: ``center``,
``heuristic``, ``passive``, ``random_active`` and ``wall_hugger``. See docs/atari.md.
"""

from wm_framework import hookimpl, lazy

WM_REQUIRES = ["ale_py", "gymnasium"]
WM_INSTALL_HINT = 'pip install "wm-framework[atari]"'


@hookimpl
def register_envs(register):
    """Atari Breakout (and other ALE games) with labels in info["labels"]."""
    register("breakout", lazy("wm_plugins.atari.env:AtariEnv"), description="ALE/Breakout-v5 (or any ALE game) with ball/paddle labels")


#: name -> (class in wm_plugins.atari.policies, one-line description). Registered lazily:
#: importing the policies pulls NumPy, which `wm --help` should not pay for.
_POLICIES = {
    "center": ("Center", "Keep the paddle at the centre of the screen; serve (FIRE) once there."),
    "heuristic": ("Heuristic", "Track the ball: aim where it will cross the paddle row (walls reflected)."),
    "passive": ("Passive", "Never move the paddle: NOOP, and FIRE while no ball is in play (so play starts)."),
    "random_active": ("RandomActive", "Uniformly random actions every step (FIRE among them, so play starts). Any ALE game."),
    "wall_hugger": ("WallHugger", "Drive to one wall and stay there; the wall is drawn per episode from the seed."),
}


@hookimpl
def register_policies(register):
    """The Breakout data policies: center, heuristic, passive, random_active, wall_hugger."""
    for name, (cls, description) in _POLICIES.items():
        register(name, lazy(f"wm_plugins.atari.policies:{cls}"), description=description,
                 example_env={"type": "breakout", "obs_size": [84, 64]})  # the env the contract tests play it in


@hookimpl
def register_probe_presets(register):
    """The six probing tasks of the published LeWM Breakout study, with its figures."""
    register("breakout", lazy("wm_plugins.atari.breakout_probe:breakout_preset"),
             description="ball_pos, ball_vel, ball_pos_pred, ball_vel_pred, paddle_pos, paddle_pos_act + published R^2")
