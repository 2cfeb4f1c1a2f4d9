"""A run's model built from its recipe and its data: the data parameters factories may ask
for (shapes, action spec, history, normalisation statistics: ``model_context.json``), the
encoder and predictor created with them, and the weighted losses.

Why the data parameters are injected, not written in recipes: the same recipe trains on a
64x64 and an 84x84 store; a factory names the parameters it wants (``obs_shape``,
``latent_dim``, ...) and gets them unless the recipe set them.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any

from wm_framework.errors import WMUsageError
from wm_framework.recipe import Recipe


def compute_data_params(recipe: Recipe, store, train_episodes) -> dict:
    """obs_shape, action spec, frameskip, history and (for state stores) normalisation stats."""
    d = recipe.data
    shape = tuple(store.obs_shape)
    pixels = store.obs_key.endswith("pixels")
    obs_shape = [shape[2], shape[0], shape[1]] if pixels else list(shape)
    spec = store.action_spec
    n = int(spec["n"] if spec["type"] == "discrete" else spec["dim"])
    ctx: dict[str, Any] = {
        "obs_shape": obs_shape,
        "action_kind": spec["type"],
        "n_actions": n,
        "frameskip": d.frameskip,
        "action_dim": n * d.frameskip,
        "history": d.window - 1,
    }
    if not pixels:
        ctx["state_stats"] = _stats(store, "obs", train_episodes)
    if spec["type"] == "continuous":
        ctx["action_stats"] = _stats(store, "action", train_episodes)
    return ctx


def _stats(store, name: str, episodes, max_rows: int = 200_000) -> dict:
    import numpy as np

    rows = []
    total = 0
    for e in episodes:
        s, t = int(store.episode_starts[e]), int(store.episode_ends[e])
        x = np.asarray(store.read(name, s, t), dtype=np.float64)
        x = x.reshape(len(x), -1)
        rows.append(x[~np.isnan(x).any(axis=1)])
        total += len(x)
        if total >= max_rows:
            break
    x = np.concatenate(rows) if rows else np.zeros((1, 1))
    std = x.std(0)
    return {"mean": x.mean(0).tolist(), "std": np.where(std < 1e-6, 1.0, std).tolist()}


CONTEXT_KEYS_ENCODER = ("obs_shape", "n_actions", "frameskip", "history", "state_stats", "action_stats")
CONTEXT_KEYS_PREDICTOR = ("action_dim", "n_actions", "frameskip", "latent_dim", "history", "state_stats", "action_stats", "obs_shape")


def _accepted(factory) -> set[str]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return set()
    return {p.name for p in sig.parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def create_with_context(kind: str, table: dict, context: dict, keys: tuple[str, ...], registry=None):
    """Build ``table`` ({type, ...params}) adding context params the factory names and the recipe did not set."""
    from wm_framework.plugins import get_registry

    reg = registry or get_registry()
    params = {k: v for k, v in table.items() if k not in ("type", "weight")}
    comp = reg.get(kind, table["type"])
    accepted = _accepted(comp.factory)
    for k in keys:
        if k in accepted and k not in params and k in context:
            v = context[k]
            params[k] = tuple(v) if k == "obs_shape" else v
    return reg.create(kind, table["type"], **params)


@contextmanager
def _section(key: str):
    """Prefix a usage error with the recipe section it came from (``model.predictor: ...``)."""
    try:
        yield
    except WMUsageError as e:
        raise WMUsageError(f"{key}: {e}") from e


def build_world_model(recipe: Recipe, context: dict, registry=None):
    from wm_framework.model import ActionSpec, WorldModel

    m = recipe.model
    if m is None:
        raise WMUsageError("model: this recipe has no [model] section")
    with _section("model.encoder"):
        encoder = create_with_context("encoders", m.encoder, context, CONTEXT_KEYS_ENCODER, registry)
    out_dim = getattr(encoder, "out_dim", None)
    if out_dim is None:
        raise WMUsageError(f"model.encoder: encoder '{m.encoder['type']}' has no out_dim attribute")
    pctx = dict(context, latent_dim=int(out_dim))
    with _section("model.predictor"):
        predictor = create_with_context("predictors", m.predictor, pctx, CONTEXT_KEYS_PREDICTOR, registry)
    spec = ActionSpec(context["action_kind"], int(context["n_actions"]), int(context["frameskip"]))
    return WorldModel(encoder, predictor, spec)


def build_losses(recipe: Recipe, registry=None) -> dict[str, tuple[float, Any]]:
    """name -> (weight, loss callable)."""
    from wm_framework.plugins import get_registry

    reg = registry or get_registry()
    out = {}
    for name, table in recipe.model.losses.items():
        params = {k: v for k, v in table.items() if k not in ("type", "weight")}
        out[name] = (float(table.get("weight", 1.0)), reg.create("losses", table["type"], **params))
    return out
