"""The core's probes and the `probe` stage, registered through the plugin hooks.

Probes: ``linear``, ``mlp`` (-> 256 -> 128, ReLU) and ``ridge`` (closed form, used by
the raw-pixel baseline). Stage: ``probe``, configured by the recipe's ``[probe]``
table (:class:`wm_framework.probe_config.ProbeConfig`). Everything is registered
lazily, like a plugin's components: NumPy, pydantic and torch load only when a probe
is built or a recipe validated, so `wm --help` stays fast.
"""

from __future__ import annotations

from wm_framework.hookspecs import hookimpl
from wm_framework.registry import lazy


@hookimpl
def register_probes(register):
    """Core probes: linear, mlp and ridge."""
    register("linear", lazy("wm_framework.probe:make_linear_probe"), description="linear probe (one affine map), AdamW + early stopping")
    register("mlp", lazy("wm_framework.probe:make_mlp_probe"), description="MLP probe (-> 256 -> 128 -> out, ReLU), AdamW + early stopping")
    register("ridge", lazy("wm_framework.probe:make_ridge_probe"), description="closed-form ridge regression, penalty chosen on the validation split")


@hookimpl
def register_stages(register):
    """Core stage: probe."""
    register("probe", lazy("wm_framework.probe_stage:probe_stage"), config=lazy("wm_framework.probe_config:ProbeConfig"),
             description="frozen-feature probes (R^2) on every kept checkpoint, with baselines")
