"""Contracts between the core and plugins, in one place.

Environment capabilities
------------------------
An env plugin registers a factory returning a ``gymnasium.Env`` (the only requirement).
Planning, surprise and planning costs need more from an env than gymnasium defines;
an env *offers* each of these by having a callable attribute of that name, on the env
or on ``env.unwrapped`` (an attribute set to ``None`` means "not offered", so one env
class can offer a capability for some of its variants only, e.g. one Atari game). The
core asks for them only through :func:`env_capability` and never knows an env by name.

See :class:`EnvCapabilities` for the signatures. What is missing degrades gracefully:
no ``reset_to_recorded`` -> reset with the episode's seed and replay the recorded
actions; no ``goal_success`` -> `wm plan` refuses with a one-line error; no
``goal_distance`` -> no mean final distance in the plan report; no perturbation ->
`wm surprise` refuses (or skips that kind).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

#: Names of the optional env capabilities (attributes of the env or of ``env.unwrapped``).
ENV_CAPABILITIES = ("reset_to_recorded", "goal_success", "goal_distance", "perturb_physical",
                    "perturb_visual", "goal_feature")


@runtime_checkable
class EnvCapabilities(Protocol):
    """Optional methods an env may offer; each is looked up separately (none is required)."""

    def reset_to_recorded(self, seed: int, recorded_obs: np.ndarray) -> tuple[Any, dict]:
        """Reset to the state whose observation was recorded (faster or more exact than replaying actions)."""

    def goal_success(self, labels_now: dict, labels_goal: dict) -> bool:
        """Whether the state with ``labels_now`` reaches the goal state with ``labels_goal``."""

    def goal_distance(self, labels_now: dict, labels_goal: dict) -> float:
        """Distance to the goal in the env's own unit (e.g. metres of end-effector error)."""

    def perturb_physical(self, rng: np.random.Generator) -> dict | None:
        """Change the simulator's state between two steps (e.g. teleport an object); a JSON-able
        description of what changed, or None when it does not apply now (the trial is redrawn)."""

    def perturb_visual(self, obs: np.ndarray) -> np.ndarray:
        """A copy of a recorded observation with an object's appearance changed (e.g. recoloured)."""

    def goal_feature(self) -> tuple[Callable, tuple[str, ...]]:
        """For the ``target`` planning cost: ``(feature, label_names)`` where ``feature`` maps raw
        predicted states ``[N, S]`` (a tensor) to task features ``[N, F]`` and ``label_names``
        names the F labels of the goal that are its target."""


def env_capability(env, name: str) -> Callable | None:
    """The env's capability ``name`` (a callable), looked up on ``env`` then ``env.unwrapped``;
    None when the env does not offer it."""
    if name not in ENV_CAPABILITIES:
        raise ValueError(f"unknown env capability '{name}'; known: {', '.join(ENV_CAPABILITIES)}")
    for obj in (env, getattr(env, "unwrapped", env)):
        fn = getattr(obj, name, None)
        if callable(fn):
            return fn
    return None


def env_capabilities(env) -> list[str]:
    """The capabilities ``env`` offers, in :data:`ENV_CAPABILITIES` order."""
    return [n for n in ENV_CAPABILITIES if env_capability(env, n) is not None]
