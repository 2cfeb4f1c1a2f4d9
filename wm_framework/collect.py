"""Parallel collection: env + policy workers feeding whole episodes to ONE writer.

``collect(out, env, policies, episodes)`` tops a store up to ``episodes`` episodes per
policy. W worker processes (spawn: safe whatever the parent imported) each build the
env and every policy once, run episodes for (policy, seed) tasks, and send whole
episodes back; the parent is the only writer, so the store's commit protocol holds.
Seeds are derived from (seed, policy name, k) and skip seeds already in the store, so
re-running after a crash continues with new episodes instead of repeating old ones.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import zlib

import numpy as np

from wm_framework.data.store import EpisodeStore
from wm_framework.data.writer import StoreWriter
from wm_framework.errors import WMUsageError

_WORKER: dict = {}  # per-process env + policies (set by _init_worker)


def _split(spec: dict, kind: str) -> tuple[str, dict]:
    if not isinstance(spec, dict) or "type" not in spec:
        raise WMUsageError(f"{kind} must be a table with a 'type' key, got {spec!r}")
    params = {k: v for k, v in spec.items() if k not in ("type", "name")}
    return spec["type"], params


def policy_label(spec: dict) -> str:
    """The name an episode's policy gets in the store: ``name`` if given, else ``type``."""
    return str(spec.get("name") or spec["type"])


def build_env(env_spec: dict):
    """The env of a ``{"type": name, **params}`` table, built through the registry."""
    import wm_framework

    name, params = _split(env_spec, "env")
    return wm_framework.make_env(name, **params)


def build_policy(spec: dict, env):
    from wm_framework.registry import get_registry

    name, params = _split(spec, "policy")
    return get_registry().create("policies", name, env, **params)


def describe_spaces(env) -> tuple[dict, dict, list[str]]:
    """(obs_spec, action_spec, label_names) of an env, or a WMUsageError if unsupported."""
    from gymnasium import spaces

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, spaces.Box):
        raise WMUsageError(f"collect needs a Box observation space, got {type(obs_space).__name__}")
    if obs_space.dtype == np.uint8:
        obs_spec = {"key": "pixels", "shape": list(obs_space.shape), "dtype": "uint8"}
    elif np.issubdtype(obs_space.dtype, np.floating) and len(obs_space.shape) == 1:
        obs_spec = {"key": "state", "shape": list(obs_space.shape), "dtype": "float32"}
    else:
        raise WMUsageError(f"observations must be uint8 pixels or a 1-D float state, got {obs_space}")
    if isinstance(act_space, spaces.Discrete):
        action_spec = {"type": "discrete", "n": int(act_space.n)}
    elif isinstance(act_space, spaces.Box) and len(act_space.shape) == 1:
        action_spec = {"type": "continuous", "dim": int(act_space.shape[0])}
    else:
        raise WMUsageError(f"actions must be Discrete or a 1-D Box, got {act_space}")
    return obs_spec, action_spec, list(getattr(env, "label_names", []) or [])


def run_episode(env, policy, seed: int, max_steps: int | None, label_names: list[str]) -> dict:
    """Play one episode; rows follow the store convention (T+1 rows, padded last row)."""
    obs, info = env.reset(seed=int(seed))
    policy.reset(int(seed))
    discrete = not hasattr(env.action_space, "shape") or env.action_space.shape == ()
    frames, actions, rewards, labels = [obs], [], [], [_labels(info, label_names)]
    terminated = truncated = False
    while not (terminated or truncated):
        action = policy(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        labels.append(_labels(info, label_names))
        if max_steps is not None and len(actions) >= max_steps and not terminated:
            truncated = True
    T = len(actions)
    if discrete:
        action_rows = np.array([int(a) for a in actions] + [-1], np.int64)
    else:
        pad = np.full((1, env.action_space.shape[0]), np.nan, np.float32)
        action_rows = np.concatenate([np.asarray(actions, np.float32).reshape(T, -1), pad])
    flags = np.zeros(T + 1, bool)
    ep = {
        "obs": np.stack(frames),
        "action": action_rows,
        "reward": np.array(rewards + [0.0], np.float32),
        "terminated": flags.copy(),
        "truncated": flags.copy(),
    }
    ep["terminated"][-1], ep["truncated"][-1] = bool(terminated), bool(truncated and not terminated)
    lab = np.array(labels, np.float32).reshape(T + 1, len(label_names))
    for j, n in enumerate(label_names):
        ep[f"labels/{n}"] = lab[:, j]
    return ep


def _labels(info: dict, names: list[str]) -> list[float]:
    got = (info or {}).get("labels", {}) or {}
    return [float(got.get(n, np.nan)) for n in names]


def _init_worker(env_spec: dict, policy_specs: list[dict], max_steps) -> None:
    env = build_env(env_spec)
    _WORKER.update(env=env, policies=[build_policy(p, env) for p in policy_specs], max_steps=max_steps,
                   labels=describe_spaces(env)[2])


def _work(task: tuple[int, int]) -> tuple[int, int, dict]:
    p, seed = task
    ep = run_episode(_WORKER["env"], _WORKER["policies"][p], seed, _WORKER["max_steps"], _WORKER["labels"])
    return p, seed, ep


def episode_seeds(seed: int, label: str, count: int, used: set[int]) -> list[int]:
    """``count`` deterministic 31-bit seeds for ``label`` that are not in ``used``."""
    out, k = [], 0
    tag = zlib.crc32(label.encode())
    while len(out) < count:
        s = int(np.random.SeedSequence([seed, tag, k]).generate_state(1)[0] & 0x7FFFFFFF)
        if s not in used:
            out.append(s)
            used.add(s)
        k += 1
    return out


def collect(out, env: dict, policies: list[dict], episodes: int, max_steps: int | None = None, workers: int = 1,
            seed: int = 0, progress: bool = True) -> EpisodeStore:
    """Top the store at ``out`` up to ``episodes`` episodes per policy and return it opened."""
    from wm_framework.plugins import get_plugin_manager

    if episodes < 0 or workers < 1:
        raise WMUsageError(f"episodes must be >= 0 and workers >= 1, got {episodes} and {workers}")
    if not policies:
        raise WMUsageError("collect needs at least one policy")
    labels = [policy_label(p) for p in policies]
    if len(set(labels)) != len(labels):
        raise WMUsageError(f"policies must have distinct names (give a 'name' to repeated types): {labels}")
    env_name, env_params = _split(env, "env")
    probe_env = build_env(env)
    for p in policies:  # fail fast on bad policy names/params, before any worker starts
        build_policy(p, probe_env)
    obs_spec, action_spec, label_names = describe_spaces(probe_env)
    probe_env.close()
    writer = StoreWriter(out, env={"name": env_name, "params": env_params}, obs_spec=obs_spec, action_spec=action_spec,
                         label_names=label_names, plugin_versions=get_plugin_manager().versions())
    if writer.num_episodes:
        store = EpisodeStore.open(out)
        have = {lab: int((store.episode_policy == lab).sum()) for lab in labels}
        used = {lab: set(store.episode_seed[store.episode_policy == lab].tolist()) for lab in labels}
    else:
        have, used = dict.fromkeys(labels, 0), {lab: set() for lab in labels}
    per_policy = [[(p, s) for s in episode_seeds(seed, lab, max(0, episodes - have[lab]), used[lab])]
                  for p, lab in enumerate(labels)]
    # Interleave policies so an interrupted run leaves a balanced store.
    tasks = [t for k in range(max(map(len, per_policy))) for queue in per_policy if k < len(queue) for t in [queue[k]]]
    _run_tasks(writer, tasks, labels, env, policies, max_steps, workers, progress)
    return EpisodeStore.open(out)


def _run_tasks(writer, tasks, labels, env, policies, max_steps, workers, progress) -> None:
    if not tasks:
        return
    bar = _Progress(len(tasks), progress)
    if workers == 1:
        _init_worker(env, policies, max_steps)
        results = map(_work, tasks)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(min(workers, len(tasks)), _init_worker, (env, policies, max_steps))
        results = pool.imap_unordered(_work, tasks)
    try:
        for p, seed, ep in results:
            writer.append_episode(ep, labels[p], seed)
            bar.advance(len(ep["obs"]))
    finally:
        bar.stop()
        if pool is not None:
            pool.terminate()
            pool.join()


class _Progress:
    """A Rich progress bar (episodes, frames/s), or nothing when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.frames, self.t0 = 0, time.perf_counter()
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("collect"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                                TextColumn("{task.fields[fps]:>8.0f} frames/s"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("collect", total=total, fps=0.0)
            self.bar.start()

    def advance(self, frames: int) -> None:
        self.frames += frames
        if self.bar is not None:
            fps = self.frames / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=1, fps=fps)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
