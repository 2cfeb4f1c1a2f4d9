"""The core's own stages, registered through the same hook a plugin would use."""

from __future__ import annotations

from wm_framework.hookspecs import hookimpl


def data_stage():
    """Build missing stores from the recipe's data.collect / data.collect_test tables."""

    def run(ctx):
        from wm_framework.store_reuse import ensure_stores

        ensure_stores(ctx)

    return run


def train_stage():
    """Train the recipe's model (resumes when the run directory has a last checkpoint)."""

    def run(ctx):
        from wm_framework.train.loop import train

        train(ctx, resume=ctx.resume, progress=ctx.progress)

    return run


@hookimpl
def register_stages(register):
    """Core stages: data and train."""
    register("data", data_stage)
    register("train", train_stage)
