"""The core's own sweep launcher, registered through the same hook a plugin would use.

Entry point (pyproject): ``core-launchers = "wm_framework.builtin_launchers"``. A plugin
adds Ray, SLURM, ... the same way: ``register("slurm", lazy("my_pkg.slurm:SlurmLauncher"))``
with the protocol of ``wm_framework/launchers.py``.
"""

from __future__ import annotations

from wm_framework.hookspecs import hookimpl
from wm_framework.registry import lazy


@hookimpl
def register_launchers(register):
    """Core launchers: local (sequential on CPU, one process per GPU slot with GPUs)."""
    register("local", lazy("wm_framework.launchers:LocalLauncher"),
             description="runs in sequence on CPU; spread over the visible GPUs (CUDA_VISIBLE_DEVICES, per_gpu runs each)")
