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


@hookimpl
def register_policies(register):
    """The Breakout data policies: center, heuristic, passive, random_active, wall_hugger."""
    from wm_plugins.atari.policies import POLICIES

    for name, cls in POLICIES.items():
        register(name, cls, description=(cls.__doc__ or "").strip().splitlines()[0])
