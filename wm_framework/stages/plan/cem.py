"""Cross-entropy-method planners over action sequences, and the costs they minimise.

The published JEPA planner (REFERENCE §1): 300 samples, 30 iterations, 30 elites, initial std 1,
horizon 5 action blocks, candidate 0 = the current mean, cost = squared L2 between the
last predicted latent and the goal image's latent; the whole plan is executed, then
the agent re-plans. ``CEMPlanner`` is that for continuous actions (sampled in
*normalised* action units, so "std 1" means one training-data standard deviation on
every axis whatever the env's units). ``DiscreteCEMPlanner`` is its categorical twin
for action ids: one categorical distribution per raw step of each block, updated
towards the elites' action frequencies with smoothing.

Every iteration rolls out all candidates in one batched forward per step
(:func:`wm_framework.stages.plan.rollout.rollout_candidates`).

A cost is any callable ``cost(rollout: dict, goal: Goal, model) -> Tensor[N]``; lower is
better. Built-ins: ``"latent"`` (the reference), ``"state"`` (distance in raw state
space through the predictor's ``absolute_next_state``/``raw_state``: the GPT state
model) and :class:`TargetCost` (distance of a function of the predicted raw state,
e.g. an end-effector position, to a target).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from wm_framework.errors import WMUsageError
from wm_framework.stages.plan.rollout import PlanContext, rollout_candidates


# ----------------------------------------------------------------------------- goals and costs
@dataclass
class Goal:
    """What the plan should reach.

    z: goal latent ``[D]`` (the encoded goal observation).
    obs: prepared goal observation ``[...]`` (a raw state for state models), optional.
    target: task quantity for :class:`TargetCost` (e.g. an end-effector position), optional.
    """

    z: torch.Tensor
    obs: torch.Tensor | None = None
    target: torch.Tensor | None = None


def latent_cost(rollout: dict, goal: Goal, model=None) -> torch.Tensor:
    """Squared L2 between the last predicted latent and the goal latent (the published cost)."""
    return (rollout["latents"][:, -1] - goal.z.reshape(1, -1)).pow(2).sum(-1)


def predicted_raw_state(rollout: dict, model) -> torch.Tensor:
    """The raw (un-normalised) state after the last block, ``[N, D]``.

    Uses the predictor's ``absolute_next_state(pred, z)`` (ensemble mean) when it has
    one, else ``raw_state(latent)``, else the latent itself (identity encoders).
    """
    p = model.predictor
    if rollout.get("preds") is not None and hasattr(p, "absolute_next_state"):
        s = p.absolute_next_state(rollout["preds"][:, -1], rollout["z_prev"][:, -1])
        return s.mean(-2) if s.dim() == 3 else s
    if hasattr(p, "raw_state"):
        return p.raw_state(rollout["latents"][:, -1])
    return rollout["latents"][:, -1]


@dataclass
class StateCost:
    """Squared L2 in raw state space between the predicted last state and the goal state.

    dims: indices of the state to compare (None: all), e.g. the 7 joint positions.
    """

    dims: list[int] | None = None

    def __call__(self, rollout: dict, goal: Goal, model) -> torch.Tensor:
        if goal.obs is None:
            raise WMUsageError("state cost needs the goal observation (a state)")
        s = predicted_raw_state(rollout, model)
        g = goal.obs.reshape(1, -1).to(s.dtype)
        if self.dims is not None:
            s, g = s[:, self.dims], g[:, self.dims]
        return (s - g).pow(2).sum(-1)


@dataclass
class TargetCost:
    """Squared L2 between ``feature(raw_state [N, D]) -> [N, k]`` and ``goal.target`` ``[k]``.

    For a robot arm, ``feature`` is forward kinematics to the end effector and the
    target a goal end-effector position (the env's ``goal_feature`` capability, wm_framework.contracts).
    """

    feature: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, rollout: dict, goal: Goal, model) -> torch.Tensor:
        if goal.target is None:
            raise WMUsageError("target cost needs goal.target")
        f = self.feature(predicted_raw_state(rollout, model))
        return (f - goal.target.reshape(1, -1).to(f.dtype)).pow(2).sum(-1)


def make_cost(spec) -> Callable:
    """``"latent"`` | ``"state"`` | a callable -> a cost callable."""
    if callable(spec):
        return spec
    if spec == "latent":
        return latent_cost
    if spec == "state":
        return StateCost()
    raise WMUsageError(f"unknown planning cost {spec!r}; use 'latent', 'state' or a callable")


# ----------------------------------------------------------------------------- action boxes
@dataclass
class ActionBox:
    """Continuous action normalisation and bounds (per action dimension, raw units).

    The planner samples u ~ N(mu, sigma) in normalised units and executes
    ``a = clip(mean + std * u, low, high)``.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def identity(cls, dim: int) -> "ActionBox":
        return cls(np.zeros(dim), np.ones(dim))


@dataclass
class PlanResult:
    """A plan: ``actions`` raw blocks ``[H, fs]`` (ids) or ``[H, fs, A]`` (floats), its cost, timing."""

    actions: np.ndarray
    cost: float
    seconds: float
    costs_per_iteration: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- planners
class _CEMBase:
    def __init__(self, samples: int, iterations: int, elites: int, horizon: int, cost, seed: int,
                 batch_size: int | None):
        if samples < 2 or iterations < 1 or horizon < 1:
            raise WMUsageError("cem: samples >= 2, iterations >= 1 and horizon >= 1 are required")
        if not 1 <= elites <= samples:
            raise WMUsageError(f"cem: elites must be in [1, samples={samples}], got {elites}")
        self.samples, self.iterations, self.elites, self.horizon = int(samples), int(iterations), int(elites), int(horizon)
        self.cost = make_cost(cost)
        self.seed = int(seed)
        self.batch_size = batch_size
        self._generator: torch.Generator | None = None

    def _gen(self, device) -> torch.Generator:
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def reset(self, seed: int | None = None) -> None:
        """Restart the sampler's random stream (``seed`` or the planner's own)."""
        self._generator = None
        if seed is not None:
            self.seed = int(seed)

    @torch.no_grad()
    def _score(self, model, context: PlanContext, goal: Goal, blocks: torch.Tensor, cost) -> torch.Tensor:
        """Cost of each candidate ``blocks [N, H, A]``; rolled out in chunks of ``batch_size`` (None: all)."""
        step = self.batch_size or blocks.shape[0]
        out = [cost(rollout_candidates(model, context, blocks[i:i + step]), goal, model)
               for i in range(0, blocks.shape[0], step)]
        return torch.cat(out).float()


class CEMPlanner(_CEMBase):
    """CEM over continuous action blocks (Gaussian per step and dimension, normalised units).

    Args:
        samples: candidate sequences per iteration (candidate 0 is the current mean).
        iterations: CEM iterations per plan.
        elites: lowest-cost candidates that refit the mean and std.
        init_std: initial std in normalised action units.
        horizon: action blocks (model steps) per plan.
        min_std: floor on the std (0: none, as the reference).
        cost: "latent" (squared L2 to the goal latent), "state" (raw state space) or a callable.
        seed: seed of the sampling stream.
        batch_size: candidates per forward (None: all at once; set it when memory is short).
    """

    discrete = False

    def __init__(self, samples: int = 300, iterations: int = 30, elites: int = 30, init_std: float = 1.0,
                 horizon: int = 5, min_std: float = 0.0, cost="latent", seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(samples, iterations, elites, horizon, cost, seed, batch_size)
        self.init_std, self.min_std = float(init_std), float(min_std)

    @torch.no_grad()
    def plan(self, model, context: PlanContext, goal: Goal, box: ActionBox | None = None, cost=None) -> PlanResult:
        spec = model.action_spec
        if spec.kind != "continuous":
            raise WMUsageError("planner 'cem' needs continuous actions; use 'cem_discrete' for action ids")
        t0 = time.perf_counter()
        cost = make_cost(cost) if cost is not None else self.cost
        fs, a_dim = spec.frameskip, spec.n
        box = box or ActionBox.identity(a_dim)
        dev, dtype = context.z.device, context.z.dtype
        mean_a = torch.as_tensor(np.asarray(box.mean, np.float32), device=dev)
        std_a = torch.as_tensor(np.asarray(box.std, np.float32), device=dev)
        low = None if box.low is None else torch.as_tensor(np.asarray(box.low, np.float32), device=dev)
        high = None if box.high is None else torch.as_tensor(np.asarray(box.high, np.float32), device=dev)
        shape = (self.horizon, fs, a_dim)
        mu = torch.zeros(shape, device=dev)
        sigma = torch.full(shape, self.init_std, device=dev)
        gen = self._gen(dev)
        history = []
        for _ in range(self.iterations):
            noise = torch.randn((self.samples, *shape), generator=gen, device=dev)
            u = mu + sigma * noise
            u[0] = mu  # candidate 0: the current mean
            raw = self._to_raw(u, mean_a, std_a, low, high)
            costs = self._score(model, context, goal, raw.flatten(2).to(dtype), cost)
            elite = torch.topk(costs, self.elites, largest=False).indices
            # Refit in normalised units from what was *executed* (clipped), so the
            # distribution never drifts outside the action bounds.
            u_exec = (raw[elite] - mean_a) / std_a
            mu = u_exec.mean(0)
            sigma = u_exec.std(0, unbiased=False).clamp_min(self.min_std) if self.elites > 1 else sigma
            history.append(float(costs.min()))
        best = self._to_raw(mu.unsqueeze(0), mean_a, std_a, low, high)
        final_cost = float(self._score(model, context, goal, best.flatten(2).to(dtype), cost)[0])
        return PlanResult(best[0].cpu().numpy().astype(np.float32), final_cost, time.perf_counter() - t0, history)

    @staticmethod
    def _to_raw(u, mean_a, std_a, low, high):
        raw = u * std_a + mean_a
        if low is not None and high is not None:
            raw = torch.maximum(torch.minimum(raw, high), low)
        return raw


class DiscreteCEMPlanner(_CEMBase):
    """CEM over discrete action ids: a categorical per raw step of each block.

    Args:
        samples: candidate sequences per iteration (candidate 0 is the most likely sequence).
        iterations: CEM iterations per plan.
        elites: lowest-cost candidates whose action frequencies update the distributions.
        horizon: action blocks (model steps) per plan.
        smoothing: weight kept on the old probabilities, ``p <- (1-s) * elite_freq + s * p``.
        cost: "latent" (squared L2 to the goal latent), "state" or a callable.
        seed: seed of the sampling stream.
        batch_size: candidates per forward (None: all at once).
    """

    discrete = True

    def __init__(self, samples: int = 300, iterations: int = 30, elites: int = 30, horizon: int = 5,
                 smoothing: float = 0.1, cost="latent", seed: int = 0, batch_size: int | None = None):
        super().__init__(samples, iterations, elites, horizon, cost, seed, batch_size)
        if not 0.0 <= smoothing < 1.0:
            raise WMUsageError(f"cem_discrete: smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    @torch.no_grad()
    def plan(self, model, context: PlanContext, goal: Goal, box=None, cost=None) -> PlanResult:
        spec = model.action_spec
        if spec.kind != "discrete":
            raise WMUsageError("planner 'cem_discrete' needs discrete actions; use 'cem' for continuous ones")
        t0 = time.perf_counter()
        cost = make_cost(cost) if cost is not None else self.cost
        fs, n = spec.frameskip, spec.n
        dev, dtype = context.z.device, context.z.dtype
        probs = torch.full((self.horizon, fs, n), 1.0 / n, device=dev)
        gen = self._gen(dev)
        history = []
        for _ in range(self.iterations):
            ids = torch.multinomial(probs.reshape(-1, n), self.samples, replacement=True, generator=gen)
            ids = ids.T.reshape(self.samples, self.horizon, fs)
            ids[0] = probs.argmax(-1)  # candidate 0: the mode (the discrete "current mean")
            costs = self._score(model, context, goal, self._blocks(ids, n, dtype), cost)
            elite = torch.topk(costs, self.elites, largest=False).indices
            freq = torch.nn.functional.one_hot(ids[elite], n).float().mean(0)
            probs = (1.0 - self.smoothing) * freq + self.smoothing * probs
            history.append(float(costs.min()))
        best = probs.argmax(-1)
        final_cost = float(self._score(model, context, goal, self._blocks(best.unsqueeze(0), n, dtype), cost)[0])
        return PlanResult(best.cpu().numpy().astype(np.int64), final_cost, time.perf_counter() - t0, history)

    @staticmethod
    def _blocks(ids: torch.Tensor, n: int, dtype) -> torch.Tensor:
        """ids ``[N, H, fs]`` -> one-hot float blocks ``[N, H, fs*n]`` (as ``prepare_actions``)."""
        return torch.nn.functional.one_hot(ids, n).to(dtype).flatten(2)


def make_cem(samples: int = 300, iterations: int = 30, elites: int = 30, init_std: float = 1.0, horizon: int = 5,
             min_std: float = 0.0, cost: str = "latent", seed: int = 0, batch_size: int | None = None) -> CEMPlanner:
    """CEM over continuous action blocks (published defaults: 300 samples, 30 iterations, 30 elites, std 1, horizon 5).

    Args:
        samples: candidate sequences per iteration (candidate 0 is the current mean).
        iterations: CEM iterations per plan.
        elites: lowest-cost candidates that refit mean and std.
        init_std: initial std in normalised action units.
        horizon: action blocks per plan.
        min_std: floor on the std (0: none).
        cost: "latent" or "state".
        seed: sampling seed.
        batch_size: candidates per forward (None: all at once).
    """
    return CEMPlanner(samples, iterations, elites, init_std, horizon, min_std, cost, seed, batch_size)


def make_cem_discrete(samples: int = 300, iterations: int = 30, elites: int = 30, horizon: int = 5,
                      smoothing: float = 0.1, cost: str = "latent", seed: int = 0,
                      batch_size: int | None = None) -> DiscreteCEMPlanner:
    """Categorical CEM over discrete action ids (one distribution per raw step of each block).

    Args:
        samples: candidate sequences per iteration (candidate 0 is the mode).
        iterations: CEM iterations per plan.
        elites: lowest-cost candidates whose action frequencies update the distributions.
        horizon: action blocks per plan.
        smoothing: weight kept on the old probabilities.
        cost: "latent" or "state".
        seed: sampling seed.
        batch_size: candidates per forward (None: all at once).
    """
    return DiscreteCEMPlanner(samples, iterations, elites, horizon, smoothing, cost, seed, batch_size)
