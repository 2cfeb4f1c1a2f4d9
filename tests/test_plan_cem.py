"""CEM planners: known optima, batched == one-by-one rollouts, planning beats random on known dynamics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _plan_util import MoveById, PointEnv, linear_model
from wm_framework.model import ActionSpec, WorldModel
from wm_framework.stages.plan.cem import ActionBox, CEMPlanner, DiscreteCEMPlanner, Goal, StateCost
from wm_framework.stages.plan.episodes import GoalTask, run_planning_episode, run_random_episode
from wm_framework.stages.plan.rollout import PlanContext, rollout_candidates, rollout_one_by_one
from _plan_util import Identity

B = np.array([[0.5, 0.2], [-0.1, 0.4]])


def test_cem_finds_the_optimum_of_a_known_quadratic():
    model = linear_model(np.eye(2), B)
    x0, g = torch.tensor([[[0.3, -0.2]]]), torch.tensor([0.55, 0.05])
    a_star = np.linalg.solve(B, (g - x0[0, 0]).numpy())  # cost ||x0 + B a - g||^2 is 0 exactly here
    planner = CEMPlanner(samples=200, iterations=25, elites=20, horizon=1, seed=0)
    res = planner.plan(model, PlanContext.from_obs(model, x0), Goal(z=g))
    assert res.actions.shape == (1, 1, 2)
    np.testing.assert_allclose(res.actions[0, 0], a_star, atol=2e-2)
    assert res.cost < 1e-4
    assert res.costs_per_iteration[-1] < res.costs_per_iteration[0]


def test_cem_respects_action_bounds_and_normalisation():
    model = linear_model(np.eye(2), B)
    box = ActionBox(mean=np.array([0.0, 0.0]), std=np.array([0.5, 0.5]), low=np.array([-0.2, -0.2]), high=np.array([0.2, 0.2]))
    g = torch.tensor([10.0, 10.0])  # unreachable: the best plan sits on the bounds
    res = CEMPlanner(samples=64, iterations=10, elites=8, horizon=2, seed=1).plan(
        model, PlanContext.from_obs(model, torch.zeros(1, 1, 2)), Goal(z=g), box=box)
    assert np.all(np.abs(res.actions) <= 0.2 + 1e-6)
    # Moving towards (+,+) through B: action (+0.2, +0.2) is the corner that gets closest.
    np.testing.assert_allclose(res.actions, 0.2, atol=1e-3)


def test_discrete_cem_solves_a_known_counting_problem():
    moves = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    model = WorldModel(Identity(2), MoveById(moves, 2), ActionSpec("discrete", 3, 2)).eval()
    goal = Goal(z=torch.tensor([2.0, 3.0]))  # 6 raw steps: exactly two "1", three "2" and one "0"
    planner = DiscreteCEMPlanner(samples=300, iterations=15, elites=30, horizon=3, seed=0)
    res = planner.plan(model, PlanContext.from_obs(model, torch.zeros(1, 1, 2)), goal)
    assert res.actions.shape == (3, 2) and res.actions.dtype == np.int64
    counts = np.bincount(res.actions.ravel(), minlength=3)
    assert counts.tolist() == [1, 2, 3]
    assert res.cost == pytest.approx(0.0)


def _registry_model(encoder: dict, predictor: dict, obs_shape, action_kind, n, fs, history):
    from wm_framework.runs.model_building import create_with_context
    from wm_framework.plugins import get_registry

    ctx = {"obs_shape": list(obs_shape), "action_kind": action_kind, "n_actions": n, "frameskip": fs,
           "action_dim": n * fs, "history": history}
    torch.manual_seed(0)
    enc = create_with_context("encoders", encoder, ctx, ("obs_shape", "history", "frameskip", "n_actions"))
    pred = create_with_context("predictors", predictor, dict(ctx, latent_dim=enc.out_dim),
                               ("action_dim", "n_actions", "frameskip", "latent_dim", "history"))
    get_registry()
    return WorldModel(enc, pred, ActionSpec(action_kind, n, fs)).eval()


@pytest.mark.parametrize("kind", ["gpt", "lewm", "mlp"])
def test_batched_rollout_equals_one_by_one_and_the_reference_rollout(kind):
    torch.manual_seed(0)
    if kind == "gpt":
        model = _registry_model({"type": "state_norm"}, {"type": "gpt_ensemble", "n_layer": 1, "n_head": 2, "n_embd": 16},
                                (14,), "continuous", 7, 2, 4)
        obs = torch.randn(1, 3, 14)
    elif kind == "lewm":
        model = _registry_model({"type": "vit", "image_size": 28, "patch_size": 14, "width": 16, "depth": 1, "heads": 2,
                                 "projector_hidden": 32},
                                {"type": "ar_transformer", "depth": 1, "heads": 2, "head_dim": 8, "mlp_dim": 32,
                                 "projector_hidden": 32}, (3, 28, 28), "discrete", 4, 2, 3)
        obs = torch.rand(1, 3, 3, 28, 28)
    else:
        model = _registry_model({"type": "mlp", "latent_dim": 8}, {"type": "mlp", "hidden": 16}, (5,), "continuous", 2, 3, 1)
        obs = torch.randn(1, 3, 5)
    with torch.no_grad():  # zero-initialised conditioning (AdaLN-Zero) would hide the actions
        for prm in model.parameters():
            if prm.abs().sum() == 0:
                prm.normal_(0, 0.1)
    A = model.action_spec.block_dim
    past = torch.randn(1, obs.shape[1] - 1, A)
    future = torch.randn(6, 4, A)
    ctx = PlanContext.from_obs(model, obs, past)
    batched = rollout_candidates(model, ctx, future)
    single = rollout_one_by_one(model, ctx, future)
    torch.testing.assert_close(batched["latents"], single["latents"], rtol=1e-4, atol=1e-5)
    ref = model.rollout(obs.expand(6, *obs.shape[1:]), torch.cat([past.expand(6, -1, -1), future], 1))
    torch.testing.assert_close(batched["latents"], ref["latents"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched["latents"][0], batched["latents"][1])  # the actions matter


def test_state_cost_uses_the_gpt_models_absolute_next_state():
    model = _registry_model({"type": "state_norm"}, {"type": "gpt_ensemble", "n_layer": 1, "n_head": 2, "n_embd": 16},
                            (14,), "continuous", 7, 1, 2)
    ctx = PlanContext.from_obs(model, torch.randn(1, 1, 14))
    roll = rollout_candidates(model, ctx, torch.randn(5, 2, 7))
    goal = torch.randn(14)
    cost = StateCost()(roll, Goal(z=goal, obs=goal), model)
    expected = (model.predictor.absolute_next_state(roll["preds"][:, -1], roll["z_prev"][:, -1]).mean(-2) - goal).pow(2).sum(-1)
    torch.testing.assert_close(cost, expected)


def test_planning_beats_random_actions_on_known_dynamics():
    model = linear_model(np.eye(2), B)
    env = PointEnv(B)
    rng = np.random.default_rng(0)

    def success(now, goal):
        return np.hypot(now["s0"] - goal["s0"], now["s1"] - goal["s1"]) <= 0.05

    planner = CEMPlanner(samples=100, iterations=10, elites=10, horizon=3, seed=0)
    box = ActionBox(np.zeros(2), np.ones(2), env.action_space.low, env.action_space.high)
    planned, random_ = [], []
    for i in range(6):
        x0 = rng.uniform(-1, 1, 2)
        g = x0 + B @ rng.uniform(-1, 1, (3, 2)).sum(0)  # reachable in 3 steps
        task = GoalTask(i, 0, 3, x0[None].astype(np.float32), np.zeros((0, 1, 2), np.float32),
                        g.astype(np.float32), {"s0": g[0], "s1": g[1]}, {"s0": x0[0], "s1": x0[1]})
        env.reset(options={"x": x0})
        planned.append(run_planning_episode(env, model, planner, task, success, budget=6, box=box))
        env.reset(options={"x": x0})
        random_.append(run_random_episode(env, task, success, budget=6, rng=np.random.default_rng(i)))
    rate = np.mean([p["success"] for p in planned])
    assert rate >= 5 / 6
    assert rate > np.mean([r["success"] for r in random_])
    assert all(len(p["plan_seconds"]) >= 1 for p in planned)
