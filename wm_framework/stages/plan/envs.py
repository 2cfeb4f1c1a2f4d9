"""What planning and surprise need from an environment, asked through its capabilities.

* **Re-creating** the env of a store (``store.env = {"name", "params"}``) and **resetting it
  to a recorded row**: the env's ``reset_to_recorded`` when it offers one (a robot arm can be
  set directly from its recorded state), else reset with the episode's seed and replay the
  recorded actions (exact for deterministic envs: ALE with ``repeat_action_probability=0``,
  physics simulators, the toy envs).
* **Success and distance** to a goal, **perturbations** for violation-of-expectation tests
  and **goal features** for the ``target`` planning cost are capabilities the env plugin
  offers (:mod:`wm_framework.contracts`); this module only asks for them and says clearly
  when one is missing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from wm_framework.contracts import env_capabilities, env_capability
from wm_framework.errors import WMUsageError


# ----------------------------------------------------------------------------- env from a store
def make_env_for_store(store, **overrides):
    """The store's env (same name and params), optionally with some params overridden."""
    from wm_framework import make_env

    spec = store.env or {}
    if not spec.get("name"):
        raise WMUsageError(f"store '{store.path}' does not record its env (attrs.env.name); cannot re-create it")
    params = dict(spec.get("params") or {})
    params.update(overrides)
    return make_env(spec["name"], **params)


def env_name(store) -> str:
    return str((store.env or {}).get("name", ""))


def reset_to_row(env, store, episode: int, row: int):
    """Bring ``env`` to the state of ``row`` (within ``episode``) of ``store``.

    Returns ``(obs, info, exact)`` where ``exact`` says whether the env's observation
    equals the recorded one (a non-deterministic env or a changed plugin breaks it).
    """
    start = int(store.episode_starts[episode])
    seed = int(store.episode_seed[episode])
    recorded = store.read("obs", start + row, start + row + 1)[0]
    fast_reset = env_capability(env, "reset_to_recorded")
    if fast_reset is not None:
        obs, info = fast_reset(seed, recorded)
    else:
        obs, info = env.reset(seed=seed)
        if row > 0:
            for a in store.read("action", start, start + row):
                obs, _, term, trunc, info = env.step(_env_action(a))
                if term or trunc:
                    break
    return obs, info, _same_obs(obs, recorded)


def _env_action(a):
    a = np.asarray(a)
    return int(a) if a.dtype.kind in "iu" else a.astype(np.float32)


def _same_obs(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iu":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a, b, atol=1e-4))


# ----------------------------------------------------------------------------- capabilities, with errors
def _missing(env, name: str, capability: str, purpose: str) -> WMUsageError:
    have = env_capabilities(env)
    return WMUsageError(f"env '{name}' offers no {capability}(...), which {purpose} needs "
                        f"(it offers: {', '.join(have) or 'none'}; docs/plugins.md, env capabilities)")


def success_fn(env, name: str) -> Callable[[dict, dict], bool]:
    """The env's ``goal_success(labels_now, labels_goal)``; a one-line error when it has none."""
    fn = env_capability(env, "goal_success")
    if fn is None:
        raise _missing(env, name, "goal_success", "`wm plan`")
    return fn


def distance_fn(env) -> Callable[[dict, dict], float] | None:
    """The env's ``goal_distance(labels_now, labels_goal) -> float`` (e.g. metres of end-effector
    error), or None when the env measures no distance to a goal."""
    return env_capability(env, "goal_distance")


def perturbation_fn(env, kind: str) -> Callable | None:
    """``perturb_physical(rng)`` or ``perturb_visual(obs)`` of the env, or None."""
    return env_capability(env, f"perturb_{kind}")


def goal_feature(env, name: str) -> tuple[Callable, tuple[str, ...]]:
    """``(feature, label_names)`` for the ``target`` planning cost; a one-line error when missing."""
    fn = env_capability(env, "goal_feature")
    if fn is None:
        raise _missing(env, name, "goal_feature", "plan.cost 'target'")
    feature, labels = fn()
    return feature, tuple(labels)
