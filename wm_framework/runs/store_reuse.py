"""The data stage's store handling: collect what is missing, reuse only what matches.

An existing store is reused only if it was built the way the recipe's collect table
says (env and params, observation / action specs, labels, policies, seeds); otherwise
the run stops with a one-line error naming the difference and the way out (delete it,
point ``data.train`` elsewhere, or ``data.rebuild = true``). Training on a store built
with other settings is a silently wrong result, the worst kind.
"""

from __future__ import annotations

import os
from pathlib import Path

from wm_framework.errors import WMUsageError
from wm_framework.runs.context import RunContext


def ensure_stores(ctx: RunContext) -> None:
    """Collect the train/test stores that are missing or short of episodes.

    An existing store is reused only if it was built the way the recipe's collect table
    says (env, observation/action specs, policies, seed; see :func:`_store_mismatch`);
    otherwise the run stops with the difference, or rebuilds it when ``data.rebuild``.
    """
    d = ctx.recipe.data
    if d is None:
        return
    from wm_framework.runs.store_paths import record_store_paths

    record_store_paths(ctx)  # before anything else changes directory: later commands run from anywhere
    d = ctx.recipe.data
    for path, cfg, what in ((d.train, d.collect, "data.train"), (d.test, d.collect_test, "data.test")):
        if path is None:
            continue
        if _store_complete(path, cfg, what, rebuild=d.rebuild):
            continue
        if cfg is None:
            if Path(path).exists() or "://" in path:
                continue
            raise WMUsageError(f"{what}: store '{path}' does not exist and the recipe has no collect table to build it")
        from wm_framework.data.collect import collect

        collect(path, env=cfg.env, policies=cfg.policies, episodes=cfg.episodes, max_steps=cfg.max_steps,
                workers=cfg.workers, seed=cfg.seed, progress=ctx.progress)
    ctx._stores = None


def _store_complete(path: str, cfg, what: str = "data.train", rebuild: bool = False) -> bool:
    """A store exists, matches its collect table and holds every episode the table asks for.

    A store that does not match raises a one-line WMUsageError naming the difference, or
    (``rebuild``) is deleted so that the caller collects it again.
    """
    if "://" not in path and not Path(path).exists():
        return False
    if cfg is None:
        return True
    from wm_framework.data.collect import policy_label
    from wm_framework.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    table = "data.collect" if what == "data.train" else "data.collect_test"
    difference = _store_mismatch(store, cfg)
    if difference is not None:
        if not rebuild:
            raise WMUsageError(f"{what}: store '{path}' was not built by {table}: {difference}; delete it, point "
                               f"{what} elsewhere, or set data.rebuild = true to rebuild it")
        _delete_store(path, what)
        return False
    for pol in cfg.policies:
        if int((store.episode_policy == policy_label(pol)).sum()) < cfg.episodes:
            return False
    return True


def _store_mismatch(store, cfg) -> str | None:
    """How ``store`` differs from what collect table ``cfg`` builds (None: it matches).

    Compared: env name and params (each side with the env's defaults filled in), observation and
    action specs and label names (when the env can be built here), the policies (names,
    and their tables where the store records them) and each policy's episode seeds (a
    store collected from another base seed holds other episodes). Fewer episodes than
    asked is no mismatch: collection tops the store up.
    """
    from wm_framework.component_defaults import canonical_params, same_component
    from wm_framework.data.collect import build_env, describe_spaces, episode_seeds, policy_label
    from wm_framework.data.writer import jsonish

    want_env = {"name": cfg.env.get("type"), "params": {k: v for k, v in cfg.env.items() if k not in ("type", "name")}}
    have_env = {"name": store.env.get("name"), "params": dict(store.env.get("params", {}))}
    if have_env["name"] != want_env["name"]:
        return f"its env is '{have_env['name']}', the recipe's is '{want_env['name']}'"
    # Defaults filled in on both sides: a resolved recipe writes them out, a store records the table as written.
    diff = _param_diff(canonical_params("envs", want_env["name"], have_env["params"]),
                       canonical_params("envs", want_env["name"], want_env["params"]))
    if diff:
        return f"env {diff}"
    spec = _env_spec(cfg.env, build_env, describe_spaces)
    if spec is not None:
        obs, action, labels = spec
        if tuple(obs["shape"]) != tuple(store.obs_shape) or obs["key"] != store.obs_key.split("/")[-1]:
            return f"its observations are {store.obs_key} {tuple(store.obs_shape)}, the env gives obs/{obs['key']} {tuple(obs['shape'])}"
        if jsonish(action) != jsonish(store.action_spec) or list(labels) != store.label_names:
            return f"its actions/labels are {store.action_spec} / {store.label_names}, the env gives {action} / {labels}"
    wanted = {policy_label(p): p for p in cfg.policies}
    extra = [p for p in store.policies() if p not in wanted]
    if extra:
        return f"it holds episodes of {', '.join(repr(p) for p in extra)}, which the recipe's policies do not include"
    recorded = dict(store.attrs.get("policies", {}))
    for label, table in wanted.items():
        if label in recorded and not same_component("policies", recorded[label], table):
            return f"its '{label}' episodes were played by {recorded[label]}, the recipe asks for {table}"
        seeds = set(store.episode_seed[store.episode_policy == label].tolist())
        # An interrupted parallel collection commits any of the seeds it was given, not a
        # prefix; a store from another base seed shares none of a generous prefix.
        if seeds and not seeds <= set(episode_seeds(cfg.seed, label, 2 * len(seeds) + cfg.episodes + 64, set())):
            return f"its '{label}' episodes were not collected with seed = {cfg.seed}"
    return None


def _param_diff(have: dict, want: dict) -> str:
    """'size is 32 in the store, 16 in the recipe' for the first differing key ('' if none)."""
    for key in sorted(set(have) | set(want)):
        if have.get(key, "unset") != want.get(key, "unset"):
            return f"{key} is {have.get(key, 'unset')!r} in the store, {want.get(key, 'unset')!r} in the recipe"
    return ""


def _env_spec(env: dict, build_env, describe_spaces):
    """(obs, action, label_names) of the recipe's env, or None when it cannot be built here
    (its plugin is unavailable): the store is then judged by the env table alone."""
    try:
        env_obj = build_env(env)
    except WMUsageError:
        return None
    try:
        return describe_spaces(env_obj)
    finally:
        env_obj.close()


def _delete_store(path: str, what: str) -> None:
    """Remove a local episode store (``data.rebuild``): renamed aside first, so a crash never
    leaves half a store at ``path``; anything that is not an episode store is refused."""
    import json
    import shutil

    root = Path(path)
    try:
        is_store = "schema_version" in json.loads((root / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        is_store = False
    if "://" in path or not is_store:
        raise WMUsageError(f"{what}: data.rebuild deletes only local episode stores; remove '{path}' yourself")
    aside = root.with_name(f".{root.name}.deleting-{os.getpid()}")
    os.replace(root, aside)
    shutil.rmtree(aside)
