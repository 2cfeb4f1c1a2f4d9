"""The core's probes and the `probe` stage, registered through the plugin hooks.

Probes: ``linear``, ``mlp`` (-> 256 -> 128, ReLU) and ``ridge`` (closed form, used by
the raw-pixel baseline). Stage: ``probe``, configured by the recipe's ``[probe]``
table (:class:`wm_framework.probe.ProbeConfig`). Nothing heavy is imported here:
torch loads only when a probe is fitted.
"""

from __future__ import annotations

import inspect

from wm_framework.hookspecs import hookimpl
from wm_framework.probe import ProbeConfig, make_linear_probe, make_mlp_probe, make_ridge_probe


def probe_stage(**params):
    """Probe frozen features of the run's checkpoints (tasks, baselines, report)."""
    cfg = ProbeConfig(**params)

    def run(ctx):
        from wm_framework.probe_report import run_probe_stage

        run_probe_stage(ctx, cfg)

    return run


# The registry reads a factory's signature to list and check parameters; give the
# stage the ProbeConfig fields so `wm components list` shows them and typos fail early.
probe_stage.__signature__ = inspect.Signature([
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                      default=None if f.default_factory is None and f.is_required() else
                      (f.default_factory() if f.default_factory is not None else f.default))
    for name, f in ProbeConfig.model_fields.items()
])


@hookimpl
def register_probes(register):
    """Core probes: linear, mlp and ridge."""
    register("linear", make_linear_probe)
    register("mlp", make_mlp_probe)
    register("ridge", make_ridge_probe)


@hookimpl
def register_stages(register):
    """Core stage: probe."""
    register("probe", probe_stage, config=ProbeConfig)
