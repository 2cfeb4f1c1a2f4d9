"""The ``probe`` stage factory (registered lazily by :mod:`wm_framework.builtins`)."""

from __future__ import annotations

import inspect

from wm_framework.stages.probe.config import ProbeConfig


def probe_stage(**params):
    """Probe frozen features of the run's checkpoints (tasks, baselines, report)."""
    cfg = ProbeConfig(**params)

    def run(ctx):
        from wm_framework.stages.probe.study import run_probe_stage

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
