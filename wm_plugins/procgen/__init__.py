"""Procgen games (CoinRun by default) as Gymnasium environments.

The engine comes from ``procgen`` / ``procgen2`` / ``procgen-gym`` (all install the
``procgen`` import name); it is imported only inside the factory so `wm --help`
stays fast and a machine without it lists this plugin as ``unavailable``.
Random policies (``random``, ``sticky_random``) are generic and live in ``blocks``.
"""

from __future__ import annotations

from wm_framework import hookimpl, lazy

WM_REQUIRES = ["procgen"]
WM_INSTALL_HINT = 'pip install "wm-framework[procgen]"'


@hookimpl
def register_envs(register):
    """Register the `procgen` environment (any Procgen game, CoinRun by default)."""
    register("procgen", lazy("wm_plugins.procgen.env:ProcgenEnv"), description="Procgen game (coinrun default): 64x64x3 RGB, 15 actions")
