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


#: Largest image side an env may be asked to render (pixels). A frame of 2048 x 2048 x 3
#: is 12 MB; beyond that no model here trains on one CPU or GPU, and a typo (an extra zero)
#: would first try to allocate tens of GB. Envs check their size parameters against it.
MAX_FRAME_SIDE = 2048


def check_frame_size(owner: str, param: str, size) -> tuple[int, int]:
    """``size`` ([height, width]) as two ints in 1..MAX_FRAME_SIDE, or a one-line WMUsageError
    naming ``owner``'s ``param`` and the limit."""
    from wm_framework.errors import WMUsageError

    try:
        h, w = (int(v) for v in size)
        whole = all(not isinstance(v, bool) and float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        whole, h, w = False, 0, 0
    if not whole or not (1 <= h <= MAX_FRAME_SIDE and 1 <= w <= MAX_FRAME_SIDE):
        raise WMUsageError(f"{owner}: {param} must be [height, width], whole numbers from 1 to {MAX_FRAME_SIDE}, "
                           f"got {size!r}")
    return h, w


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


# ----------------------------------------------------------------------------- components
# What the core relies on, per kind. Required members are checked when a component is
# created (Registry.create), so a plugin that breaks its contract fails there with one
# line naming the member, not later inside a training step. Optional hooks are listed
# with what happens without them; WorldModel (wm_framework/model.py) is the one place that
# calls the model hooks and holds their defaults.

#: kind -> (required members, optional callable hooks -> what the core does without them)
COMPONENT_CONTRACTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "envs": (("reset", "step", "observation_space", "action_space"), {
        name: "see EnvCapabilities" for name in ENV_CAPABILITIES}),
    "policies": (("reset", "__call__"), {}),
    "encoders": (("forward", "out_dim"), {
        "features": "features(obs, pooling=None) -> [B,T,F] for probes; default: the encoder output",
        "preprocess": "preprocess(obs) -> obs in the space predicted frames live in; default: none",
    }),
    "predictors": (("forward",), {
        "make_target": "make_target(z, obs) -> training target; default: z[:, 1:]",
        "next_latent": "next_latent(pred_t, z_t) -> z_{t+1} in rollouts; default: pred_t",
        "next_obs": "next_obs(pred_t) -> frame [B,C,H,W]: the model predicts observations",
        "raw_state": "raw_state(latent) -> env state, for state planning costs; default: the latent",
        "absolute_next_state": "absolute_next_state(pred_t, z_t) -> env state; default: raw_state",
        "on_train_step": "on_train_step(step, total) before every step (schedules)",
        "fit_normalization_from_batches": "fit_normalization_from_batches(batches) once before step 0",
        "predict_last_shared": ("predict_last_shared(z_shared [1,P,D], a_shared [1,P,A], z_own [N,S,D], "
                                "a_own [N,S,A]) -> forward(cat)[:, -1], the shared steps run once (planning, eval "
                                "mode; wm_framework.attention); default: the full forward per candidate"),
    }),
    "losses": (("__call__",), {"on_train_step": "on_train_step(step, total) before every step"}),
    "probes": (("fit", "predict"), {}),
    "planners": (("plan", "reset", "horizon"), {}),
    "launchers": (("__call__",), {}),
    "stages": (("__call__",), {}),
    "probe_presets": ((), {}),
}


def check_component(kind: str, name: str, obj: Any) -> None:
    """Raise a one-line :class:`~wm_framework.errors.WMUsageError` if ``obj`` (just built as the
    ``kind`` component ``name``) lacks a required member or has a hook that is not callable."""
    from wm_framework.errors import WMUsageError
    from wm_framework.registry import singular

    required, hooks = COMPONENT_CONTRACTS.get(kind, ((), {}))
    what = f"{singular(kind)} '{name}' ({type(obj).__name__})"
    missing = [m for m in required if not hasattr(obj, m)]
    if missing:
        raise WMUsageError(f"{what} breaks the {kind} contract: it has no {', '.join(missing)} "
                           f"(wm_framework/contracts.py)")
    not_callable = [h for h in hooks if getattr(obj, h, None) is not None and not callable(getattr(obj, h))]
    if not_callable:
        raise WMUsageError(f"{what}: {', '.join(not_callable)} must be callable or absent (wm_framework/contracts.py)")
    if kind == "encoders" and not (isinstance(obj.out_dim, int) and obj.out_dim > 0):
        raise WMUsageError(f"{what}: out_dim must be a positive int, got {obj.out_dim!r}")
    if kind == "predictors" and hasattr(obj, "history") and not (isinstance(obj.history, int) and obj.history >= 0):
        raise WMUsageError(f"{what}: history must be an int >= 0 (0: all past steps), got {obj.history!r}")
    if kind == "probe_presets" and not (isinstance(obj, dict) and isinstance(obj.get("tasks"), list)):
        raise WMUsageError(f"{what}: a probe preset is a dict with a 'tasks' list")


# ----------------------------------------------------------------------------- stages
def config_stage(config: type, run: Callable[[Any, Any], Any], doc: str | None = None) -> Callable:
    """The one stage pattern: a stage factory from its config model and ``run(ctx, cfg)``.

    ``config`` is the pydantic model of the stage's recipe table (register it as the
    stage's ``config=`` too); the factory validates the table's parameters into it and
    returns ``lambda ctx: run(ctx, cfg)``. Its signature lists the config's fields with
    their defaults, so `wm components list` and recipe validation see them.
    """
    import inspect

    def factory(**params):
        cfg = config(**params)
        return lambda ctx: run(ctx, cfg)

    def default(field):
        if field.default_factory is not None:
            return field.default_factory()
        return None if field.is_required() else field.default

    factory.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default(f))
        for name, f in config.model_fields.items()])
    factory.__doc__ = doc or run.__doc__
    factory.__name__ = getattr(run, "__name__", "stage")
    factory.config, factory.run = config, run
    return factory
