"""The core's own components, registered through the same hooks a plugin uses.

One entry point (pyproject: ``core = "wm_framework.builtins"``) registers everything the
core ships, lazily like a plugin's components (NumPy, pydantic and torch load only when
something is built or a recipe validated, so `wm --help` stays fast):

* stages: ``data`` and ``train`` (the core's own), ``probe``, ``eval``, ``plan``,
  ``surprise`` and ``straightness`` (``wm_framework/stages/``);
* probes: ``linear``, ``mlp`` (-> 256 -> 128, ReLU) and ``ridge`` (closed form);
* planners: ``cem`` (continuous actions) and ``cem_discrete`` (action ids), the published CEM
  defaults;
* launchers: ``local`` (sequential on CPU, one pinned process per GPU slot) and ``slurm``
  (a SLURM job array through submitit, an optional dependency). A plugin adds Ray, ... the
  same way, with the protocol of ``wm_framework/runs/launchers.py``.
"""

from __future__ import annotations

from wm_framework.hookspecs import hookimpl
from wm_framework.registry import lazy

PLUGIN_NAME = "core"


def data_stage():
    """Build missing stores from the recipe's data.collect / data.collect_test tables."""

    def run(ctx):
        from wm_framework.runs.store_reuse import ensure_stores

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
    """Core stages: data, train, probe, eval, plan, surprise, straightness."""
    register("data", data_stage)
    register("train", train_stage)
    register("probe", lazy("wm_framework.stages.probe.stage:probe_stage"),
             config=lazy("wm_framework.stages.probe.config:ProbeConfig"),
             description="frozen-feature probes (R^2) on every kept checkpoint, with baselines")
    register("eval", lazy("wm_framework.stages.evaluate.stage:eval_stage"),
             config=lazy("wm_framework.stages.evaluate.stage:EvalConfig"),
             description="Open-loop rollouts: MSE/PSNR/SSIM per horizon vs copy-last-frame, plot, videos")
    register("plan", lazy("wm_framework.stages.plan.stage:plan_stage"),
             config=lazy("wm_framework.stages.plan.stage:PlanConfig"),
             description="goal-conditioned CEM planning on held-out start/goal pairs vs random actions")
    register("surprise", lazy("wm_framework.stages.physics.stage:surprise_stage"),
             config=lazy("wm_framework.stages.physics.stage:SurpriseConfig"),
             description="violation of expectation: latent surprise at a teleport / recolouring vs unperturbed")
    register("straightness", lazy("wm_framework.stages.physics.stage:straightness_stage"),
             config=lazy("wm_framework.stages.physics.stage:StraightnessConfig"),
             description="temporal straightness of latent trajectories for every checkpoint")


@hookimpl
def register_probes(register):
    """Core probes: linear, mlp and ridge."""
    register("linear", lazy("wm_framework.stages.probe.probes:make_linear_probe"),
             description="linear probe (one affine map), AdamW + early stopping")
    register("mlp", lazy("wm_framework.stages.probe.probes:make_mlp_probe"),
             description="MLP probe (-> 256 -> 128 -> out, ReLU), AdamW + early stopping")
    register("ridge", lazy("wm_framework.stages.probe.probes:make_ridge_probe"),
             description="closed-form ridge regression, penalty chosen on the validation split")


@hookimpl
def register_planners(register):
    """CEM planners over action sequences."""
    register("cem", lazy("wm_framework.stages.plan.cem:make_cem"),
             description="CEM over continuous action blocks (300 samples, 30 iters, 30 elites, std 1, horizon 5)")
    register("cem_discrete", lazy("wm_framework.stages.plan.cem:make_cem_discrete"),
             description="categorical CEM over discrete action ids (per-step distributions, elite frequencies)")


@hookimpl
def register_launchers(register):
    """Core launchers: local (sequential on CPU, one process per GPU slot with GPUs) and slurm."""
    register("local", lazy("wm_framework.runs.launchers:LocalLauncher"),
             description="runs in sequence on CPU; spread over the visible GPUs (CUDA_VISIBLE_DEVICES, per_gpu runs each)")
    register("slurm", lazy("wm_framework.runs.slurm:SlurmLauncher"),
             description="one SLURM job-array task per run, through submitit (pip install 'wm-framework[slurm]')")
