"""Parallel collection: env + policy workers that write their own chunks, ONE index writer.

``collect(out, env, policies, episodes)`` tops a store up to ``episodes`` episodes per
policy. W worker processes (spawn: safe whatever the parent imported) each build the
env and every policy once, and play (policy, seed) tasks. Per episode, the parent hands
out the rows, the worker compresses and writes the whole observation chunks inside them,
and the parent writes the rest and commits episodes to the index in row order, so the
store's commit protocol holds (see "parallel collection" below). The env's specs come
from the workers' first message, so no env is built in the parent.
Seeds are derived from (seed, policy name, k) and skip seeds already in the store, so
re-running after a crash continues with new episodes instead of repeating old ones.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import zlib
from typing import NamedTuple

import numpy as np

from wm_framework.contracts import MAX_FRAME_SIDE
from wm_framework.data.store import EpisodeStore, is_unfinished_creation
from wm_framework.data.writer import StoreWriter, WholeChunkWriter, jsonish, whole_chunk_span
from wm_framework.errors import WMUsageError
from wm_framework.locks import exclusive, store_lock_file
from wm_framework.stops import how_to_continue


# ----------------------------------------------------------------------------- worker messages
class WorkerReady(NamedTuple):
    """A worker built its env and policies; ``specs`` = (obs_spec, action_spec, label_names)."""

    worker: int
    specs: tuple


class EpisodeWritten(NamedTuple):
    """A worker played an episode and wrote the whole chunks of rows [start_row, start_row + length)."""

    worker: int
    policy: int  # index into the policies list
    seed: int
    start_row: int
    length: int
    edges: list  # [(first row, obs rows)]: the partial chunks at both ends, which the parent writes
    columns: dict  # the episode's other columns (actions, rewards, labels, ...), which the parent writes


class WorkerFailed(NamedTuple):
    """A worker stopped: a usage error (one line for the user) or a crash (a traceback)."""

    worker: int
    usage: bool
    message: str
    #: the errno of an OSError (``message`` is then its file name), else 0
    errno: int = 0


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
    from wm_framework.plugins import get_registry

    name, params = _split(spec, "policy")
    return get_registry().create("policies", name, env, **params)


def describe_spaces(env) -> tuple[dict, dict, list[str]]:
    """(obs_spec, action_spec, label_names) of an env, or a WMUsageError if unsupported."""
    from gymnasium import spaces

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, spaces.Box):
        raise WMUsageError(f"collect needs a Box observation space, got {type(obs_space).__name__}")
    values = int(np.prod(obs_space.shape, dtype=np.int64))
    if values > MAX_FRAME_SIDE ** 2 * 4:  # an env without its own size check: refuse before collecting
        raise WMUsageError(f"observations of shape {obs_space.shape} have {values} values; at most "
                           f"{MAX_FRAME_SIDE ** 2 * 4} ({MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}x4) per frame are supported")
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


class FrameBuffer:
    """Observations of one episode copied into one growing array as they arrive.

    Copying each frame while it is still in cache, into memory reused across episodes,
    is cheaper than ``np.stack`` of a list of frames at the end (docs/perf_collect.md).
    """

    def __init__(self, capacity: int = 1024):
        self.capacity, self.array, self.n = max(1, int(capacity)), None, 0

    def start(self, obs) -> None:
        obs = np.asarray(obs)
        if self.array is None or self.array.shape[1:] != obs.shape or self.array.dtype != obs.dtype:
            self.array = np.empty((self.capacity, *obs.shape), obs.dtype)
        self.n = 0
        self.append(obs)

    def append(self, obs) -> None:
        if self.n == len(self.array):
            grown = np.empty((2 * len(self.array), *self.array.shape[1:]), self.array.dtype)
            grown[:self.n] = self.array
            self.array = grown
        self.array[self.n] = obs
        self.n += 1

    def view(self) -> np.ndarray:
        """The frames so far (a view: valid until the next ``start``)."""
        return self.array[:self.n]


def play_episode(env, policy, seed: int, max_steps: int | None, label_names: list[str],
                 frames: FrameBuffer | None = None) -> tuple[np.ndarray, dict]:
    """Play one episode: (the T+1 observations, the other columns in store rows).

    Rows follow the store convention (T+1 rows, padded last row). The observations are a
    view of ``frames`` (a new buffer when not given), valid until it is reused.
    """
    frames = frames if frames is not None else FrameBuffer(max_steps + 1 if max_steps else 1024)
    obs, info = env.reset(seed=int(seed))
    policy.reset(int(seed))
    discrete = not hasattr(env.action_space, "shape") or env.action_space.shape == ()
    frames.start(obs)
    actions, rewards, labels = [], [], [_labels(info, label_names)]
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
    cols = {
        "action": action_rows,
        "reward": np.array(rewards + [0.0], np.float32),
        "terminated": flags.copy(),
        "truncated": flags.copy(),
    }
    cols["terminated"][-1], cols["truncated"][-1] = bool(terminated), bool(truncated and not terminated)
    lab = np.array(labels, np.float32).reshape(T + 1, len(label_names))
    for j, n in enumerate(label_names):
        cols[f"labels/{n}"] = lab[:, j]
    return frames.view(), cols


def run_episode(env, policy, seed: int, max_steps: int | None, label_names: list[str]) -> dict:
    """Play one episode into one dict of row arrays, as ``StoreWriter.append_episode`` takes."""
    frames, cols = play_episode(env, policy, seed, max_steps, label_names)
    return {"obs": frames, **cols}


def _labels(info: dict, names: list[str]) -> list[float]:
    got = (info or {}).get("labels", {}) or {}
    return [float(got.get(n, np.nan)) for n in names]


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
    if episodes < 0 or workers < 1:
        raise WMUsageError(f"episodes must be >= 0 and workers >= 1, got {episodes} and {workers}")
    if not policies:
        raise WMUsageError("collect needs at least one policy")
    labels = [policy_label(p) for p in policies]
    if len(set(labels)) != len(labels):
        raise WMUsageError(f"policies must have distinct names (give a 'name' to repeated types): {labels}")
    _split(env, "env")
    for p in policies:
        _split(p, "policy")
    # One writer per store: a second collect into it stops here, naming the holder's PID.
    with exclusive(store_lock_file(out), f"store {out}"), \
            how_to_continue("run the same command again to continue: committed episodes are kept"):
        have, used = _existing_episodes(out, labels)
        per_policy = [[(p, s) for s in episode_seeds(seed, lab, max(0, episodes - have[lab]), used[lab])]
                      for p, lab in enumerate(labels)]
        # Interleave policies so an interrupted run leaves a balanced store.
        tasks = [t for k in range(max(map(len, per_policy))) for queue in per_policy if k < len(queue)
                 for t in [queue[k]]]
        if workers == 1 or len(tasks) <= 1:
            _collect_in_process(out, env, policies, labels, tasks, max_steps, progress)
        else:
            _collect_in_workers(out, env, policies, labels, tasks, max_steps, min(workers, len(tasks)), progress)
        return EpisodeStore.open(out)


def _existing_episodes(out, labels: list[str]) -> tuple[dict, dict]:
    """(episodes per policy, seeds used per policy) of the committed episodes already at ``out``."""
    path = os.fspath(out)
    if "://" not in path and (not os.path.exists(os.path.join(path, "zarr.json")) or is_unfinished_creation(path)):
        return dict.fromkeys(labels, 0), {lab: set() for lab in labels}
    try:
        store = EpisodeStore.open(path)
    except WMUsageError:
        if "://" in path:  # not created yet; the writer creates it
            return dict.fromkeys(labels, 0), {lab: set() for lab in labels}
        raise
    have = {lab: int((store.episode_policy == lab).sum()) for lab in labels}
    used = {lab: set(store.episode_seed[store.episode_policy == lab].tolist()) for lab in labels}
    return have, used


def _open_writer(out, env: dict, specs: tuple[dict, dict, list[str]]) -> StoreWriter:
    from wm_framework.plugins import get_plugin_manager

    env_name, env_params = _split(env, "env")
    obs_spec, action_spec, label_names = specs
    return StoreWriter(out, env={"name": env_name, "params": env_params}, obs_spec=obs_spec, action_spec=action_spec,
                       label_names=label_names, plugin_versions=get_plugin_manager().versions())


def record_policies(writer: StoreWriter, policies: list[dict], labels: list[str]) -> None:
    """Keep each policy's table in the store's ``policies`` attribute; refuse a different one.

    Episodes are stored under the policy's name only, so without this record a store
    topped up (or reused by ``wm run``) with other policy params would mix two data sets
    silently. A policy whose episodes predate the record stays unrecorded (unknown).
    """
    from wm_framework.component_defaults import same_component

    old = dict(writer.group.attrs.get("policies", {}))
    existing = set(np.asarray(writer.arrays["episodes/policy"][:writer.num_episodes]).astype(str).tolist())
    new = dict(old)
    for label, table in zip(labels, policies):
        table = jsonish(dict(table))
        if label in old and not same_component("policies", old[label], table):  # defaults written out or not
            raise WMUsageError(f"store '{writer.path}' is incompatible: its '{label}' episodes were played by "
                               f"{old[label]} but this collection has {table}")
        if label not in old and label not in existing:
            new[label] = table
    if new != old:
        writer.group.attrs.update({"policies": new})


def _collect_in_process(out, env, policies, labels, tasks, max_steps, progress) -> None:
    """One process: play an episode, append it, repeat (also checks specs when there is nothing to do)."""
    env_obj = build_env(env)
    pols = [build_policy(p, env_obj) for p in policies]  # bad policy names fail before anything is written
    specs = describe_spaces(env_obj)
    writer = _open_writer(out, env, specs)
    record_policies(writer, policies, labels)
    bar = _Progress(len(tasks), progress)
    try:
        for p, seed in tasks:
            ep = run_episode(env_obj, pols[p], seed, max_steps, specs[2])
            writer.append_episode(ep, labels[p], seed)
            bar.advance(len(ep["obs"]))
    finally:
        bar.stop()
        env_obj.close()


# -- parallel collection ------------------------------------------------------------------
#
# Each worker plays an episode, takes its rows from a shared counter, writes the whole
# chunks of observations inside those rows itself (Zstd runs in the workers, and the big
# arrays never cross a pipe; chunk files need no array metadata), then sends the rest
# (``written``): the observation rows in chunks shared with neighbouring episodes and the
# small columns. The parent grows the arrays, writes the rest and commits finished
# episodes in row order, so the episode index is still written last and only by one
# process. Rows a worker wrote past the committed end when something died are ignored by
# readers and overwritten by the next run; orphaned workers stop within _POLL_S.

_POLL_S = 0.5  # how often a waiting process checks that the other side is still alive
#: Finished episodes are committed together at most this often (and all at the end): each
#: commit rewrites the chunks of every small column, which is what costs, not the rows.
COMMIT_EVERY_S = 2.0
#: Rows the arrays grow by at a time in parallel collection (one metadata write per array).
HEADROOM_ROWS = 8192


def _worker_main(wid, env_spec, policy_specs, max_steps, out, tasks, results, next_row, store_ready) -> None:
    import queue
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    parent = mp.parent_process()

    def orphaned() -> bool:
        if parent is None or parent.is_alive():
            return False
        results.cancel_join_thread()  # nobody reads our messages any more: exit without flushing them
        return True

    try:
        env = build_env(env_spec)
        pols = [build_policy(p, env) for p in policy_specs]
        specs = describe_spaces(env)
    except WMUsageError as e:
        results.put(WorkerFailed(wid, True, str(e)))
        return
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(WorkerFailed(wid, False, traceback.format_exc()))
        return
    results.put(WorkerReady(wid, specs))
    column = f"obs/{specs[0]['key']}"
    buffer = FrameBuffer(max_steps + 1 if max_steps else 1024)  # reused: one allocation per worker
    chunks = None
    try:
        while True:
            try:
                task = tasks.get(timeout=_POLL_S)
            except queue.Empty:
                if orphaned():
                    return
                continue
            if task is None:
                return
            p, seed = task
            frames, cols = play_episode(env, pols[p], seed, max_steps, specs[2], buffer)
            while not store_ready.wait(_POLL_S):  # the parent creates the store while the first episodes play
                if orphaned():
                    return
            with next_row.get_lock():  # rows are handed out in order; the parent commits in that order
                n0 = next_row.value
                next_row.value += len(frames)
            if chunks is None:
                chunks = WholeChunkWriter(out, column)
            c0, c1 = (whole_chunk_span(n0, n0 + len(frames), chunks.chunk_rows) if chunks.enabled
                      else (n0, n0))  # not a column this process can write: the parent writes all rows
            step = max(1, chunks.chunk_rows) * 8
            for r in range(c0, c1, step):
                if orphaned():
                    return  # never write into a store someone else may be appending to by now
                r1 = min(r + step, c1)
                chunks.write(r, frames[r - n0:r1 - n0])
            edges = [(n0, frames[:c0 - n0]), (c1, frames[c1 - n0:])]
            edges = [(start, rows.copy()) for start, rows in edges if len(rows)]
            results.put(EpisodeWritten(wid, p, seed, n0, len(frames), edges, cols))
    except WMUsageError as e:
        results.put(WorkerFailed(wid, True, str(e)))
    except OSError as e:  # a full disk, a vanished directory: the parent re-raises it as such
        results.put(WorkerFailed(wid, False, str(e.filename or ""), e.errno or 0))
    except BaseException:  # noqa: BLE001
        results.put(WorkerFailed(wid, False, traceback.format_exc()))
    finally:
        env.close()


def _collect_in_workers(out, env, policies, labels, tasks, max_steps, workers, progress) -> None:
    ctx = mp.get_context("spawn")
    task_q, results = ctx.Queue(), ctx.Queue()
    next_row, store_ready = ctx.Value("q", 0), ctx.Event()
    procs = [ctx.Process(target=_worker_main, daemon=True,
                         args=(w, env, policies, max_steps, str(out), task_q, results, next_row, store_ready))
             for w in range(workers)]
    for task in tasks:  # workers play their first episode while the parent creates the store
        task_q.put(task)
    for _ in procs:
        task_q.put(None)
    for proc in procs:
        proc.start()
    bar, finished = None, False
    try:
        specs = _next_message(results, procs, want=WorkerReady).specs  # every worker is ready before anything else
        writer = _open_writer(out, env, specs)  # a store that does not match fails here, before any row is handed out
        record_policies(writer, policies, labels)
        next_row.value = writer.num_frames
        store_ready.set()
        bar = _Progress(len(tasks), progress)
        written: dict[int, EpisodeWritten] = {}  # first row -> episodes written but not committed
        committed, last_commit = 0, time.perf_counter()
        while committed < len(tasks):
            msg = _next_message(results, procs)
            if isinstance(msg, WorkerReady):
                if jsonish(msg.specs) != jsonish(specs):
                    raise RuntimeError(f"collection workers built different envs: {msg.specs} != {specs}")
            elif isinstance(msg, EpisodeWritten):
                written[msg.start_row] = msg
                writer.reserve_upto(msg.start_row + msg.length, headroom=HEADROOM_ROWS)
                batch, row = [], writer.num_frames
                while row in written:  # the finished episodes that continue the committed rows
                    batch.append(written[row])
                    row += written[row].length
                last = committed + len(batch) == len(tasks)
                if batch and (last or time.perf_counter() - last_commit >= COMMIT_EVERY_S):
                    for episode in batch:
                        del written[episode.start_row]
                    _commit_batch(writer, batch, labels)
                    committed += len(batch)
                    last_commit = time.perf_counter()
                    for episode in batch:
                        bar.advance(episode.length)
        writer.trim()
        finished = True
    finally:
        if bar is not None:
            bar.stop()
        task_q.cancel_join_thread()  # unread tasks must not block the parent's exit on an error
        for proc in procs:
            proc.join(timeout=5 if finished else 0)  # finished workers are leaving; others are stopped
            if proc.is_alive():
                proc.terminate()
                proc.join()


def _commit_batch(writer: StoreWriter, batch: list[EpisodeWritten], labels: list[str]) -> None:
    """Write the parent's share of consecutive finished episodes, then commit them together."""
    n0 = batch[0].start_row
    cols = {name: np.concatenate([episode.columns[name] for episode in batch]) for name in batch[0].columns}
    writer.write_rows(n0, cols)
    # Edge rows of adjacent episodes share a chunk: merge touching pieces into one write.
    runs: list[list] = []
    for episode in batch:
        for start, rows in episode.edges:
            if runs and runs[-1][0] + sum(len(r) for r in runs[-1][1]) == start:
                runs[-1][1].append(rows)
            else:
                runs.append([start, [rows]])
    for start, pieces in runs:
        writer.write_rows(start, {writer.obs_column: pieces[0] if len(pieces) == 1 else np.concatenate(pieces)})
    writer.commit([(labels[e.policy], e.seed, e.start_row + e.length) for e in batch])


def _next_message(results, procs, want: type | None = None):
    """The next worker message (of type ``want``, if given); raises what a worker reported,
    or if one died without a word."""
    import queue

    while True:
        try:
            msg = results.get(timeout=_POLL_S)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a collection worker died (exit code {dead[0]})") from None
            continue
        if isinstance(msg, WorkerFailed):
            if msg.usage:
                raise WMUsageError(msg.message)
            if msg.errno:
                raise OSError(msg.errno, os.strerror(msg.errno), msg.message or None)
            raise RuntimeError(f"collection worker {msg.worker} failed:\n{msg.message}")
        if want is None or isinstance(msg, want):
            return msg


class _Progress:
    """The console's progress bar over episodes, with frames/s; a line at the end."""

    def __init__(self, total: int, enabled: bool):
        from wm_framework.console import Progress

        self.frames, self.t0 = 0, time.perf_counter()
        self.bar = Progress(total, 0, "collect", enabled, unit="episode")

    def advance(self, frames: int) -> None:
        self.frames += frames
        self.bar.advance(1, f"{self.frames / max(time.perf_counter() - self.t0, 1e-9):,.0f} frames/s")

    def stop(self) -> None:
        if self.bar.done:
            self.bar.update(self.bar.done, f"{self.frames:,} frames, {self.frames / max(time.perf_counter() - self.t0, 1e-9):,.0f} frames/s",
                            force_line=True)
        self.bar.close()
