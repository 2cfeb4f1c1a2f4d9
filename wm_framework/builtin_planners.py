"""The core's planners and physical-understanding stages, registered like a plugin's.

Planners: ``cem`` (continuous actions) and ``cem_discrete`` (action ids), LeWM's CEM
defaults. Stages: ``plan`` (goal-conditioned planning vs random actions), ``surprise``
(violation of expectation) and ``straightness`` (latent velocity cosine per checkpoint).
Factories are lazy: torch loads only when something is built.
"""

from __future__ import annotations

from wm_framework.hookspecs import hookimpl
from wm_framework.registry import lazy


@hookimpl
def register_planners(register):
    """CEM planners over action sequences."""
    register("cem", lazy("wm_framework.planning.cem:make_cem"),
             description="CEM over continuous action blocks (300 samples, 30 iters, 30 elites, std 1, horizon 5)")
    register("cem_discrete", lazy("wm_framework.planning.cem:make_cem_discrete"),
             description="categorical CEM over discrete action ids (per-step distributions, elite frequencies)")


@hookimpl
def register_stages(register):
    """Stages: plan, surprise, straightness."""
    # Lazy, like a plugin's components: these modules import NumPy and pydantic.
    register("plan", lazy("wm_framework.plan:plan_stage"), config=lazy("wm_framework.plan:PlanConfig"),
             description="goal-conditioned CEM planning on held-out start/goal pairs vs random actions")
    register("surprise", lazy("wm_framework.physics_eval:surprise_stage"),
             config=lazy("wm_framework.physics_eval:SurpriseConfig"),
             description="violation of expectation: latent surprise at a teleport / recolouring vs unperturbed")
    register("straightness", lazy("wm_framework.physics_eval:straightness_stage"),
             config=lazy("wm_framework.physics_eval:StraightnessConfig"),
             description="temporal straightness of latent trajectories for every checkpoint")


def ensure_registered() -> None:
    """Register this module with the plugin manager unless an entry point already did.

    Lets `wm plan` / `wm surprise` and the tests work in a checkout whose installed entry
    points predate this module; a no-op once ``core-planners`` is an entry point.
    """
    import sys

    from wm_framework.plugins import get_plugin_manager
    from wm_framework.plugins import get_registry

    if "cem" not in get_registry().names("planners"):
        get_plugin_manager().register_module(sys.modules[__name__], "core-planners")
