"""Hooks: keep this module light. `lazy("module:attr")` defers the import of each
factory until it is built, so loading the plugin costs nothing."""

from wm_framework import hookimpl, lazy


@hookimpl
def register_envs(register):
    """A 1-D random walk with a drift you control."""
    register("drift_walk", lazy("wm_plugin_example.walk:DriftWalkEnv"),
             description="1-D position driven by a continuous drift action.")


@hookimpl
def register_losses(register):
    """Mean absolute error between prediction and target."""
    register("example_l1", lazy("wm_plugin_example.losses:L1Loss"))
