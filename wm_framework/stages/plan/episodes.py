"""Goal-conditioned planning evaluation: start and goal from held-out episodes.

A task is a recorded episode, a start row ``t`` and the goal row ``t + k`` (k raw env
steps later). The env is brought to the start state (planning.envs.reset_to_row), the
agent plans ``horizon`` action blocks towards the goal observation's latent, executes
the whole plan, re-plans, and succeeds as soon as the env's success criterion holds
(checked after every raw step), or fails when the step budget runs out or the episode
ends. The random-action baseline gets the same starts, goals and budget.

Everything here takes explicit objects (model, planner, env, tasks), so a test can
drive it with a hand-built model and env; ``wm_framework.stages.plan.stage`` wires it to a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from wm_framework.model import prepare_actions, prepare_obs
from wm_framework.stages.plan.cem import ActionBox, Goal
from wm_framework.stages.plan.rollout import PlanContext


@dataclass
class GoalTask:
    """One start/goal pair. Context frames are ``frameskip`` rows apart, ending at the start row."""

    episode: int
    start_row: int
    goal_row: int
    context_obs: np.ndarray  # [C, ...] stored observations
    context_blocks: np.ndarray  # [C-1, fs] ids or [C-1, fs, A] floats: the blocks between them
    goal_obs: np.ndarray
    goal_labels: dict
    start_labels: dict = field(default_factory=dict)


def sample_tasks(store, episodes, count: int, k: int, context: int, frameskip: int, rng: np.random.Generator,
                 success: Callable | None = None, tries: int = 20) -> list[GoalTask]:
    """``count`` tasks from distinct episodes where possible (cycling when there are fewer).

    A start whose labels already satisfy ``success`` against the goal is redrawn (up to
    ``tries`` times) so that neither planner nor baseline scores a free success.
    """
    span = (context - 1) * frameskip
    usable = [int(e) for e in episodes if store.episode_lengths[e] - 1 >= span + k]
    if not usable:
        from wm_framework.errors import WMUsageError

        raise WMUsageError(f"no held-out episode is long enough for k={k} with {context} context frames "
                           f"({span + k + 1} rows needed)")
    order = rng.permutation(usable)
    tasks = []
    for i in range(count):
        e = int(order[i % len(order)])
        start = int(store.episode_starts[e])
        last = int(store.episode_lengths[e]) - 1 - k
        for _ in range(tries):
            t = int(rng.integers(span, last + 1))
            start_labels = _labels(store, start + t)
            goal_labels = _labels(store, start + t + k)
            if success is None or not success(start_labels, goal_labels):
                break
        obs = store.read("obs", start + t - span, start + t + 1)[::frameskip]  # C frames
        acts = store.read("action", start + t - span, start + t)  # (C-1) * fs raw actions
        blocks = acts.reshape(context - 1, frameskip, *acts.shape[1:])
        tasks.append(GoalTask(e, t, t + k, obs, blocks, store.read("obs", start + t + k, start + t + k + 1)[0],
                              goal_labels, start_labels))
    return tasks


def _labels(store, row: int) -> dict:
    return {n: float(store.read(f"labels/{n}", row, row + 1)[0]) for n in store.label_names}


def _to_model_obs(frames: np.ndarray, device) -> torch.Tensor:
    return prepare_obs(torch.as_tensor(np.asarray(frames)).unsqueeze(0).to(device))


def make_goal(model, goal_obs: np.ndarray, device, target=None) -> Goal:
    obs = _to_model_obs(goal_obs[None], device)
    with torch.no_grad():
        z = model.encode(obs)[0, 0]
    tgt = None if target is None else torch.as_tensor(np.asarray(target, np.float32), device=device)
    return Goal(z=z, obs=obs[0, 0], target=tgt)


def _env_action(a):
    a = np.asarray(a)
    return int(a) if a.dtype.kind in "iu" else a.astype(np.float32)


def run_planning_episode(env, model, planner, task: GoalTask, success: Callable, budget: int, device="cpu",
                         box: ActionBox | None = None, cost=None, target=None) -> dict:
    """Plan-execute-replan from the env's current state (already reset to ``task``'s start)."""
    spec = model.action_spec
    context_len = len(task.context_obs)
    frames = list(task.context_obs)
    blocks = list(task.context_blocks)
    goal = make_goal(model, task.goal_obs, device, target)
    steps, times, done, labels = 0, [], False, dict(task.start_labels)
    while steps < budget and not done:
        obs_t = _to_model_obs(np.stack(frames[-context_len:]), device)
        past = blocks[-(context_len - 1):] if context_len > 1 else []
        act_t = None
        if past:
            act_t = prepare_actions(torch.as_tensor(np.stack(past)).unsqueeze(0).to(device), spec)
        context = PlanContext.from_obs(model, obs_t, act_t)
        result = planner.plan(model, context, goal, box=box, cost=cost)
        times.append(result.seconds)
        for block in result.actions:
            for a in block:
                obs, _, term, trunc, info = env.step(_env_action(a))
                steps += 1
                labels = info.get("labels", {})
                if success(labels, task.goal_labels):
                    return {"success": True, "steps": steps, "plan_seconds": times, "cycles": len(times),
                            "final_labels": labels}
                if term or trunc or steps >= budget:
                    done = True
                    break
            if done:
                break
            frames.append(obs)
            blocks.append(np.asarray(block))
    return {"success": False, "steps": steps, "plan_seconds": times, "cycles": len(times), "final_labels": labels}


def run_random_episode(env, task: GoalTask, success: Callable, budget: int, rng: np.random.Generator) -> dict:
    """The baseline: uniformly random actions from the env's action space (seeded)."""
    space = env.action_space
    info = {}
    for step in range(1, budget + 1):
        if hasattr(space, "n"):
            a = int(rng.integers(int(space.n)))
        else:
            a = rng.uniform(space.low, space.high).astype(np.float32)
        _, _, term, trunc, info = env.step(a)
        if success(info.get("labels", {}), task.goal_labels):
            return {"success": True, "steps": step, "final_labels": info.get("labels", {})}
        if term or trunc:
            break
    return {"success": False, "steps": step, "final_labels": info.get("labels", {})}


def summarize(per_episode: list[dict], random_episodes: list[dict] | None) -> dict:
    times = [t for e in per_episode for t in e["plan_seconds"]]
    out = {
        "episodes": len(per_episode),
        "success_rate": float(np.mean([e["success"] for e in per_episode])) if per_episode else 0.0,
        "mean_steps": float(np.mean([e["steps"] for e in per_episode])) if per_episode else 0.0,
        "cycles": len(times),
        "plan_seconds": {"median": float(np.median(times)) if times else None,
                         "p95": float(np.percentile(times, 95)) if times else None,
                         "mean": float(np.mean(times)) if times else None},
    }
    if random_episodes is not None:
        out["random_success_rate"] = float(np.mean([e["success"] for e in random_episodes])) if random_episodes else 0.0
    # Envs that measure a distance to the goal (goal_distance) get its mean and spread at the episode end.
    for prefix, eps in (("", per_episode), ("random_", random_episodes or [])):
        errors = [e["final_error"] for e in eps if e.get("final_error") is not None]
        if errors:
            out[f"{prefix}mean_final_error"] = float(np.mean(errors))
            out[f"{prefix}final_error_std"] = float(np.std(errors, ddof=1)) if len(errors) > 1 else None
    # ... and the distance at the start: what never moving would score (if the env stays put).
    starts = [e["start_error"] for e in per_episode if e.get("start_error") is not None]
    if starts:
        out["mean_start_error"] = float(np.mean(starts))
    return out
