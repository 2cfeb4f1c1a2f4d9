"""Policies that work with any env: uniform random and sticky random actions.

A policy is built as ``factory(env, **params)`` and is an object with ``reset(seed)``
and ``__call__(obs, info) -> action``. Both draw from their own seeded generator (not
``env.action_space.sample()``), so an episode is reproducible from (env seed, policy seed).
"""

from __future__ import annotations

import numpy as np


def _sample(space, rng: np.random.Generator):
    """One uniform action from a Discrete or Box space."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    if isinstance(space, spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high).astype(space.dtype)
    raise TypeError(f"random policies support Discrete and Box action spaces, not {type(space).__name__}")


class RandomPolicy:
    """Uniform random actions from the env's action space.

    Args:
        env: the environment whose ``action_space`` is sampled.
        seed: seed of the policy's own generator (``reset(seed)`` replaces it).
    """

    def __init__(self, env, seed: int = 0):
        self.action_space = env.action_space
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; a seed makes the action sequence reproducible."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def __call__(self, obs, info=None):
        return _sample(self.action_space, self.rng)


class StickyRandomPolicy(RandomPolicy):
    """Random actions that repeat the previous action with probability ``p``.

    Args:
        env: the environment whose ``action_space`` is sampled.
        p: probability of repeating the previous action at each step (0 = uniform random).
        seed: seed of the policy's own generator.
    """

    def __init__(self, env, p: float = 0.25, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        super().__init__(env, seed=seed)
        self.p = float(p)
        self.previous = None

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.previous = None

    def __call__(self, obs, info=None):
        if self.previous is None or self.rng.random() >= self.p:
            self.previous = _sample(self.action_space, self.rng)
        return self.previous
