"""Helpers for the planning / surprise tests: hand-built world models with known dynamics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from wm_framework.model import ActionSpec, WorldModel


class Identity(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, obs):
        return obs.flatten(2).float()


class LinearStep(nn.Module):
    """x' = A x + sum_k B a_k over the raw steps of a block (exact for fs = 1)."""

    history = 1

    def __init__(self, A: np.ndarray, B: np.ndarray, frameskip: int = 1):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=torch.float32))
        self.register_buffer("B", torch.as_tensor(B, dtype=torch.float32))
        self.fs = frameskip

    def forward(self, z, a):
        u = a.unflatten(-1, (self.fs, -1)).sum(-2)
        return z @ self.A.T + u @ self.B.T


class MoveById(nn.Module):
    """Discrete toy: each raw action id moves the state by a fixed vector."""

    history = 1

    def __init__(self, moves: np.ndarray, frameskip: int):
        super().__init__()
        self.register_buffer("moves", torch.as_tensor(moves, dtype=torch.float32))
        self.fs = frameskip

    def forward(self, z, a):
        onehot = a.unflatten(-1, (self.fs, self.moves.shape[0]))
        return z + (onehot @ self.moves).sum(-2)


def linear_model(A, B, frameskip: int = 1) -> WorldModel:
    return WorldModel(Identity(A.shape[0]), LinearStep(A, B, frameskip), ActionSpec("continuous", B.shape[1], frameskip)).eval()


class PointEnv(gym.Env):
    """x' = x + B a with actions in [-1, 1]^2; labels s0, s1 (the known dynamics of linear_model)."""

    def __init__(self, B: np.ndarray):
        self.B = np.asarray(B, np.float64)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.x = np.zeros(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = np.asarray((options or {}).get("x", np.zeros(2)), np.float64)
        return self.x.astype(np.float32), {"labels": self._labels()}

    def step(self, action):
        self.x = self.x + self.B @ np.clip(np.asarray(action, np.float64), -1, 1)
        return self.x.astype(np.float32), 0.0, False, False, {"labels": self._labels()}

    def _labels(self):
        return {"s0": float(self.x[0]), "s1": float(self.x[1])}


# The head every tiny `linear_state` recipe of the run-level tests shares: 10 random
# episodes collected into {store}, an identity encoder and an MLP predictor of {hidden} units.
TOY_RECIPE_HEAD = """
seed = 0
stages = ["data", "train"]
[data]
train = "{store}"
window = 2
frameskip = 1
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 30 }}
policies = [{{ type = "random" }}]
episodes = 10
[model]
encoder = {{ type = "identity" }}
predictor = {{ type = "mlp", hidden = {hidden} }}
[model.losses.pred]
type = "mse"
"""


def run_toy_recipe(tmp, name: str, body: str, hidden: int):
    """Write TOY_RECIPE_HEAD + ``body`` as a recipe in ``tmp`` and run it: the run (or sweep) directory."""
    from wm_framework.plugins import reset_registry
    from wm_framework.runs.run import run_recipe

    reset_registry()
    recipe = tmp / "r.toml"
    recipe.write_text(f'name = "{name}"\n' + TOY_RECIPE_HEAD.format(store=tmp / "toy.zarr", hidden=hidden) + body)
    return run_recipe(str(recipe), out=str(tmp / "runs"), progress=False)
