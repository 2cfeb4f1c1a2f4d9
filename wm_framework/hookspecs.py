"""Plugin hooks (contract).

A plugin is a module, named by an entry point in the ``wm_framework`` group, holding
``@hookimpl`` functions. Each ``register_*`` hook receives ``register(name, factory,
**meta)``; ``meta`` may carry ``description`` and ``requires`` (an install hint).
"""

from __future__ import annotations

import pluggy

PROJECT = "wm_framework"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Component kinds a plugin can register, in the order `wm components list` shows them.
KINDS = ("envs", "policies", "encoders", "predictors", "losses", "probes", "probe_presets", "planners", "launchers",
         "stages")


@hookspec
def register_envs(register):
    """Register environment factories: factory(**params) -> gymnasium.Env."""


@hookspec
def register_policies(register):
    """Register data policies: factory(env, **params) -> object with reset(seed) and __call__(obs, info)."""


@hookspec
def register_encoders(register):
    """Register encoders: factory(**params) -> nn.Module mapping obs[B,T,...] to z[B,T,D]."""


@hookspec
def register_predictors(register):
    """Register predictors: factory(**params) -> nn.Module mapping (z[B,T,D], action[B,T,A]) to [B,T,D_out]."""


@hookspec
def register_losses(register):
    """Register losses: factory(**params) -> callable(out, batch) -> scalar Tensor or dict of terms."""


@hookspec
def register_probes(register):
    """Register probes: factory(**params) -> object with fit(...) returning metrics."""


@hookspec
def register_probe_presets(register):
    """Register probing-task presets (`[probe] tasks = "<name>"`): factory() -> {"tasks": [task tables],
    "reference": optional published figures (wm_framework.stages.probe.config.ProbeReference fields)}."""


@hookspec
def register_planners(register):
    """Register planners: factory(**params) -> object with plan(...)."""


@hookspec
def register_launchers(register):
    """Register sweep launchers: factory(**params) -> callable(runs) -> results."""


@hookspec
def register_stages(register):
    """Register run stages: factory(**params) -> callable(ctx) run by `wm run` (meta: config=PydanticModel)."""


@hookspec
def register_commands(app):
    """Add Typer sub-commands or groups to the `wm` app."""
