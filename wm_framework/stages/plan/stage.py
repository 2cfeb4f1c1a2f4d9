"""`wm plan` and the `plan` run stage: goal-conditioned planning with a trained world model.

Recipe table (validated by :class:`PlanConfig`)::

    [plan]
    episodes = 10             # start/goal tasks from held-out episodes
    k = 25                    # raw env steps from start to goal (default: horizon * frameskip)
    budget = 50               # raw env steps allowed (default: 2 * k)
    planner = { type = "cem_discrete", samples = 300, iterations = 30 }   # default by action kind
    cost = "latent"           # latent | state | target (the env's goal_feature, e.g. an end effector)

Writes ``plan.json`` into the run directory, ``results.json["plan"]`` and the report's
"plan" section: success rate against the random-action baseline and planning time per
cycle (median, p95). The loop itself lives in ``wm_framework.stages.plan.episodes``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wm_framework.contracts import config_stage



class PlanConfig(BaseModel):
    """The [plan] table of a recipe (and the options of `wm plan`)."""

    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(default=10, ge=1, description="Start/goal tasks from held-out episodes.")
    k: int | None = Field(default=None, ge=1, description="Raw env steps from start to goal (default horizon*frameskip).")
    budget: int | None = Field(default=None, ge=1, description="Raw env steps allowed per task (default 2*k).")
    planner: dict[str, Any] | None = Field(default=None, description="Planner table {type=..., params}; default cem/cem_discrete.")
    cost: Literal["latent", "state", "target"] = Field(default="latent", description="Planning cost.")
    context: int | None = Field(default=None, ge=1, description="Context frames given to the model (default: its history).")
    split: Literal["test", "holdout", "val"] = Field(default="test", description="Held-out data for starts and goals.")
    checkpoint: str = Field(default="last", description="Checkpoint: last, best, a label or a path.")
    random_baseline: bool = Field(default=True, description="Also run the random-action baseline.")
    seed: int = Field(default=0, description="Task sampling, planner and baseline seed.")


def build_planner(cfg: PlanConfig, action_kind: str):
    """The configured planner (registry), defaulting to `cem` / `cem_discrete` by action kind."""
    from wm_framework.plugins import get_registry

    table = dict(cfg.planner or {})
    name = table.pop("type", "cem_discrete" if action_kind == "discrete" else "cem")
    table.setdefault("seed", cfg.seed)
    return get_registry().create("planners", name, **table)


def run_plan(ctx, cfg: PlanConfig) -> dict:
    """Evaluate planning on a RunContext; records plan.json, results["plan"] and the report section."""
    import numpy as np
    import torch

    from wm_framework.stages.plan import envs as wenv
    from wm_framework.stages.plan.cem import ActionBox, StateCost, TargetCost, latent_cost
    from wm_framework.stages.plan.episodes import run_planning_episode, run_random_episode, sample_tasks, summarize
    from wm_framework.train.checkpoint import atomic_write_json

    device = ctx.device
    model = ctx.load_model(cfg.checkpoint, device=device)
    sampler = ctx.sampler(cfg.split)
    store, episodes = sampler.store, sampler.episodes
    name = wenv.env_name(store)
    env = wenv.make_env_for_store(store)
    success = wenv.success_fn(env, name)
    distance = wenv.distance_fn(env)

    def final_error(res: dict, task) -> dict:
        labels = res.pop("final_labels", None)
        if distance is not None and labels:
            res["final_error"] = float(distance(labels, task.goal_labels))
            res["start_error"] = float(distance(task.start_labels, task.goal_labels))
        return res
    spec = model.action_spec
    planner = build_planner(cfg, spec.kind)
    fs = spec.frameskip
    k = cfg.k or planner.horizon * fs
    budget = cfg.budget or 2 * k
    context_len = cfg.context or max(1, model.history)
    rng = np.random.default_rng(cfg.seed)
    tasks = sample_tasks(store, episodes, cfg.episodes, k, context_len, fs, rng, success)

    box = None
    if spec.kind == "continuous":
        stats = ctx.data_params().get("action_stats") or {"mean": [0.0] * spec.n, "std": [1.0] * spec.n}
        space = env.action_space
        box = ActionBox(np.asarray(stats["mean"]), np.asarray(stats["std"]),
                        getattr(space, "low", None), getattr(space, "high", None))
    cost, target_labels = latent_cost, None
    if cfg.cost == "state":
        cost = StateCost()
    elif cfg.cost == "target":
        feature, target_labels = wenv.goal_feature(env, name)
        cost = TargetCost(feature)

    # Plans run in the precision training would pick here (bf16 on GPUs and bf16 CPUs, fp32
    # elsewhere): the predictor's matmuls are the cost of a plan.
    from wm_framework.train.precision import resolve_precision

    train_cfg = getattr(ctx.recipe, "train", None)
    precision = resolve_precision(getattr(train_cfg, "precision", "auto") or "auto", torch.device(device))
    autocast = precision.autocast(torch.device(device))
    per_episode, random_eps, exact = [], [], []
    for i, task in enumerate(tasks):
        _, _, ok = wenv.reset_to_row(env, store, task.episode, task.start_row)
        exact.append(ok)
        planner.reset(cfg.seed + i)
        target = None if target_labels is None else [task.goal_labels[n] for n in target_labels]
        with autocast():
            res = final_error(run_planning_episode(env, model, planner, task, success, budget, device, box, cost,
                                                   target), task)
        per_episode.append(dict(res, episode=task.episode, start_row=task.start_row))
        if cfg.random_baseline:
            wenv.reset_to_row(env, store, task.episode, task.start_row)
            random_eps.append(final_error(run_random_episode(env, task, success, budget,
                                                             np.random.default_rng(cfg.seed + i)), task))
    env.close()

    summary = summarize(per_episode, random_eps if cfg.random_baseline else None)
    summary.update({"env": name, "planner": type(planner).__name__, "k": k, "budget": budget,
                    "context": context_len, "horizon": planner.horizon, "samples": planner.samples,
                    "iterations": planner.iterations, "cost": cfg.cost, "checkpoint": cfg.checkpoint,
                    "device": str(device), "precision": precision.name, "precision_reason": precision.reason,
                    "replay_exact_fraction": float(np.mean(exact)),
                    "torch_threads": torch.get_num_threads()})
    atomic_write_json(ctx.path / "plan.json", {"summary": summary, "episodes": per_episode, "random": random_eps})
    ctx.update_results("plan", summary)
    ctx.write_report_section("plan", "Planning (goal-conditioned CEM)", plan_markdown(summary))
    return summary


def plan_markdown(s: dict) -> str:
    def fmt(v):
        return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    rows = [
        ("success rate (planner)", fmt(s["success_rate"])),
        ("success rate (random actions)", fmt(s.get("random_success_rate"))),
        *([("mean final distance to the goal, planner / random actions",
             f"{fmt(s['mean_final_error'])} / {fmt(s.get('random_mean_final_error'))}")] if "mean_final_error" in s else []),
        *([("mean distance to the goal at the start (never moving would keep it)", fmt(s["mean_start_error"]))]
          if "mean_start_error" in s else []),
        ("tasks", s["episodes"]),
        ("goal distance k / budget (raw steps)", f"{s['k']} / {s['budget']}"),
        ("planner", f"{s['planner']}: {s['samples']} samples x {s['iterations']} iterations, horizon {s['horizon']}, cost {s['cost']}"),
        ("planning time per cycle, median / p95 (s)", f"{fmt(s['plan_seconds']['median'])} / {fmt(s['plan_seconds']['p95'])}"),
        ("planning cycles", s["cycles"]),
        ("device / torch threads", f"{s['device']} / {s['torch_threads']}"),
        ("start states reproduced exactly", fmt(s["replay_exact_fraction"])),
    ]
    md = "| | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    md += ("\n\nStart and goal come from held-out episodes (goal = the frame k raw steps later); success is "
           "checked after every env step with the env's criterion. Details per task: `plan.json`.")
    return md


plan_stage = config_stage(PlanConfig, run_plan,
                          "Goal-conditioned planning (CEM) on held-out start/goal pairs vs a random-action baseline.")
