"""Hooks: keep this module light; import heavy things inside the factories."""

from wm_framework import hookimpl


@hookimpl
def register_envs(register):
    """A 1-D random walk with a drift you control."""
    from wm_plugin_example.walk import DriftWalkEnv

    register("drift_walk", DriftWalkEnv, description="1-D position driven by a continuous drift action.")


@hookimpl
def register_losses(register):
    """Mean absolute error between prediction and target."""
    from wm_plugin_example.losses import L1Loss

    register("example_l1", L1Loss)
