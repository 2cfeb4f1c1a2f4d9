"""The ``probe`` stage factory (registered lazily by :mod:`wm_framework.builtins`)."""

from __future__ import annotations

from wm_framework.contracts import config_stage
from wm_framework.stages.probe.config import ProbeConfig


def _run(ctx, cfg: ProbeConfig) -> None:
    from wm_framework.stages.probe.study import run_probe_stage  # the study pulls torch and scikit-learn

    run_probe_stage(ctx, cfg)


probe_stage = config_stage(ProbeConfig, _run, "Probe frozen features of the run's checkpoints (tasks, baselines, report).")
