"""The core's `eval` stage, registered through the same hook a plugin would use.

The implementation lives in ``wm_framework.evaluate.stage``; this module only
registers it so that the plugin loader can always include it.
"""

from __future__ import annotations

from wm_framework.hookspecs import hookimpl
from wm_framework.registry import lazy


@hookimpl
def register_stages(register):
    """Core stage: eval (open-loop rollouts vs the copy-last-frame baseline)."""
    register("eval", lazy("wm_framework.evaluate.stage:eval_stage"), config=lazy("wm_framework.evaluate.stage:EvalConfig"),
             description="Open-loop rollouts: MSE/PSNR/SSIM per horizon vs copy-last-frame, plot, videos")
