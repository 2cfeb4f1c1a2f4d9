"""Episode splits and the window sampler that feeds training.

A window is ``length`` frames, ``frameskip`` raw rows apart, inside one episode: it
starts at row s and its frames are rows s, s+fs, ..., s+(L-1)fs (the last one inside
the episode). Frame k carries the block of raw actions at rows s+k*fs .. s+(k+1)*fs-1;
action rows past the episode end are padding (-1 / NaN), as is the action stored on
an episode's last row.

Windows are served from decoded data, never one tiny Zarr read per window:

* ``ram``: the rows of the selected episodes are decoded once into RAM (read in
  contiguous runs of episodes, i.e. whole chunks);
* ``cache``: observations stay on disk and whole decoded chunks are kept in an LRU
  cache of ``ram_limit_bytes``; the small columns (actions, rewards, labels) are
  always in RAM;
* ``auto``: ``ram`` when the selected rows fit in ``ram_limit_bytes``.

Both modes return identical batches. The sampler is picklable and loads lazily in the
process that uses it, so it works as a map-style dataset in DataLoader workers.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError


def split_episodes(store: EpisodeStore, val_fraction: float = 0.1, seed: int = 0, holdout_policies=()) -> dict:
    """Split episode indices into train / val / holdout, by episode (never by window).

    ``holdout`` = every episode of a policy in ``holdout_policies``; the remaining
    episodes are shuffled with ``seed`` and ``val_fraction`` of them (at least one
    when the fraction is positive and two or more episodes remain) go to ``val``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise WMUsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    holdout_policies = [holdout_policies] if isinstance(holdout_policies, str) else list(holdout_policies)
    known = store.policies()
    unknown = [p for p in holdout_policies if p not in known]
    if unknown:
        raise WMUsageError(f"holdout policies {unknown} are not in store '{store.path}'; policies: {', '.join(known) or '(none)'}")
    held = np.isin(store.episode_policy, holdout_policies)
    rest = np.flatnonzero(~held)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(rest)
    n_val = int(round(val_fraction * len(rest)))
    if val_fraction > 0 and n_val == 0 and len(rest) >= 2:
        n_val = 1
    return {
        "train": np.sort(perm[n_val:]).astype(np.int64),
        "val": np.sort(perm[:n_val]).astype(np.int64),
        "holdout": np.flatnonzero(held).astype(np.int64),
    }


class WindowSampler:
    """Windows of ``length`` frames, ``frameskip`` rows apart, from chosen episodes."""

    def __init__(self, store, episodes, length: int, frameskip: int = 1, mode: str = "auto", labels=None,
                 ram_limit_bytes: int = 4 * 2**30):
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
        if length < 1 or frameskip < 1:
            raise WMUsageError(f"window length and frameskip must be >= 1, got {length} and {frameskip}")
        if mode not in ("auto", "ram", "cache"):
            raise WMUsageError(f"sampler mode must be auto, ram or cache, got '{mode}'")
        self.length, self.frameskip = int(length), int(frameskip)
        self.episodes = np.asarray(episodes, dtype=np.int64).reshape(-1)
        if len(self.episodes) and (self.episodes.min() < 0 or self.episodes.max() >= self.store.num_episodes):
            raise WMUsageError(f"episode indices must be in [0, {self.store.num_episodes})")
        names = self.store.label_names if labels is None else list(labels)
        missing = [n for n in names if n not in self.store.label_names]
        if missing:
            raise WMUsageError(f"labels {missing} are not in store '{self.store.path}'; labels: {self.store.label_names}")
        self.label_names = names
        self.ram_limit_bytes = int(ram_limit_bytes)
        self._index = self._build_index()
        row_bytes = int(np.prod(self.store.obs_shape)) * self.store.obs_dtype.itemsize
        self.needed_bytes = int(self.store.episode_lengths[self.episodes].sum()) * row_bytes
        self.mode = mode if mode != "auto" else ("ram" if self.needed_bytes <= self.ram_limit_bytes else "cache")
        self._loaded_pid = None

    # -- the window index ------------------------------------------------------------
    def _build_index(self) -> np.ndarray:
        span = (self.length - 1) * self.frameskip
        lengths = self.store.episode_lengths[self.episodes]
        counts = np.maximum(lengths - span, 0)
        ep = np.repeat(self.episodes, counts)
        starts = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.stack([ep, starts], axis=1).astype(np.int64)

    def window_index(self) -> np.ndarray:
        """[N, 2] int64: (episode index in the store, start row within the episode)."""
        return self._index.copy()

    def __len__(self) -> int:
        return len(self._index)

    # -- lazy, per-process loading -------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_obs", "_small", "_row_of", "_cache", "_cache_bytes"):
            state.pop(key, None)
        state["_loaded_pid"] = None
        return state

    def _ensure_loaded(self) -> None:
        if self._loaded_pid == os.getpid():
            return
        store = self.store
        # Contiguous runs of selected episodes are read in one piece (whole chunks).
        eps = np.unique(self.episodes)
        starts, ends = store.episode_starts[eps], store.episode_ends[eps]
        breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
        runs = [(int(starts[a]), int(ends[b - 1])) for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(eps)])]
        # _row_of[episode] = row of that episode's first row in the local (RAM) arrays.
        self._row_of = np.full(store.num_episodes, -1, np.int64)
        local = np.concatenate([[0], np.cumsum(ends - starts)[:-1]]) if len(eps) else np.zeros(0, np.int64)
        self._row_of[eps] = local
        cols = ["action"] + [f"labels/{n}" for n in self.label_names]
        self._small = {c: _concat([store.read(c, a, b) for a, b in runs], store, c) for c in cols}
        if self.mode == "ram":
            self._obs = _concat([store.read("obs", a, b) for a, b in runs], store, "obs")
        else:
            self._obs = None
            self._run_starts = np.array([a for a, _ in runs] + [np.iinfo(np.int64).max], np.int64)
            self._run_local = np.concatenate([[0], np.cumsum([b - a for a, b in runs])]).astype(np.int64)
            self._cache, self._cache_bytes = OrderedDict(), 0
        self._loaded_pid = os.getpid()

    # -- serving windows -------------------------------------------------------------
    def get(self, indices) -> dict:
        """The windows at ``indices`` (into ``window_index()``), deterministic."""
        self._ensure_loaded()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)})")
        L, fs = self.length, self.frameskip
        ep, s = self._index[idx, 0], self._index[idx, 1]
        base = self._row_of[ep] + s  # local row of each window's first frame
        frame_rows = base[:, None] + fs * np.arange(L)[None, :]  # [B, L]
        offsets = np.arange(L * fs).reshape(L, fs)
        act_rows = base[:, None, None] + offsets[None]  # [B, L, fs]
        # Rows at or past the episode end hold no action of this episode: pad them.
        past_end = (s[:, None, None] + offsets[None]) >= self.store.episode_lengths[ep][:, None, None]
        act_all = self._small["action"]
        action = act_all[np.minimum(act_rows, len(act_all) - 1)]
        if action.dtype.kind == "f":
            action[past_end] = np.nan
        else:
            action[past_end] = -1
        batch = {"obs": self._gather_obs(frame_rows), "action": action}
        for n in self.label_names:
            batch[f"labels/{n}"] = self._small[f"labels/{n}"][frame_rows].astype(np.float32)
        batch["episode"] = ep.copy()
        batch["t0"] = s.copy()
        return batch

    def __getitem__(self, i):
        """One window without the batch axis (int), or a batch (sequence of ints)."""
        if np.ndim(i) == 0:
            return {k: v[0] for k, v in self.get([int(i)]).items()}
        return self.get(i)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        """``batch_size`` windows drawn uniformly (with replacement) using ``rng``."""
        if len(self) == 0:
            raise WMUsageError(self._empty_message())
        return self.get(rng.integers(0, len(self), size=batch_size))

    def iter_batches(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        """Every window exactly once, in batches (the last one may be smaller)."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for i in range(0, len(order), batch_size):
            yield self.get(order[i:i + batch_size])

    def _empty_message(self) -> str:
        return (f"no window of {self.length} frames with frameskip {self.frameskip} fits in the "
                f"{len(self.episodes)} selected episodes of '{self.store.path}'")

    # -- observations in cache mode ----------------------------------------------------
    def _gather_obs(self, local_rows: np.ndarray) -> np.ndarray:
        if self._obs is not None:
            return self._obs[local_rows]
        flat = local_rows.reshape(-1)
        # local row -> store row (runs of episodes are contiguous in both)
        run = np.searchsorted(self._run_local, flat, side="right") - 1
        store_rows = self._run_starts[run] + (flat - self._run_local[run])
        chunk = self.store.chunk_rows("obs")
        out = np.empty((len(flat), *self.store.obs_shape), self.store.obs_dtype)
        for c in np.unique(store_rows // chunk):
            sel = np.flatnonzero(store_rows // chunk == c)
            out[sel] = self._chunk(int(c), chunk)[store_rows[sel] - c * chunk]
        return out.reshape(*local_rows.shape, *self.store.obs_shape)

    def _chunk(self, c: int, chunk: int) -> np.ndarray:
        """Decoded obs chunk ``c`` from the LRU cache (decoding it on a miss)."""
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        data = self.store.read("obs", c * chunk, min((c + 1) * chunk, self.store.num_frames))
        self._cache[c] = data
        self._cache_bytes += data.nbytes
        while self._cache_bytes > self.ram_limit_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return data


def _concat(parts: list, store: EpisodeStore, name: str) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    col = store.zarr_array(name)
    return np.zeros((0, *col.shape[1:]), col.dtype)
