"""How many windows of one store occur, bit for bit, in another (``wm data overlap``).

A held-out store is only held out if its windows are not also training windows. A
deterministic env (an Atari emulator without sticky actions) replays the same frames
whenever a policy happens to repeat its decisions, so fresh seeds are no proof:
measure. Windows are those of the sampler (``window`` frames ``frameskip`` rows
apart, inside one episode); two windows are shared when every observation in them is
identical.

Method: every frame is hashed once (BLAKE2b of its bytes) and numbered by its hash, so
a window becomes a short tuple of frame numbers; the windows of A go into a set and
each window of B is looked up in it. Observations are read in blocks of whole chunks,
so memory is bounded by one block plus 8 bytes per frame and per window, whatever the
size of the frames.

A window in which nothing moves (all its frames identical: a paused screen before a
serve) is reported apart: such windows say nothing about replayed dynamics and every
policy produces them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError

#: Uncompressed observation bytes decoded at a time (rounded to whole chunks).
BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class OverlapReport:
    """Windows of store B that also occur in store A."""

    window: int  # frames per window
    frameskip: int  # rows between consecutive frames of a window
    total: int  # windows of B examined
    shared: int  # windows of B bit-identical (obs) to some window of A
    static_total: int  # windows of B in which nothing moves (all frames of the window identical)
    static_shared: int  # of those, shared with A

    @property
    def moving_shared(self) -> int:
        """Shared windows in which something moves: replayed dynamics."""
        return self.shared - self.static_shared

    def to_json(self) -> dict:
        """Every field plus ``moving_shared``, JSON-ready."""
        return {**asdict(self), "moving_shared": self.moving_shared}

    def describe(self) -> str:
        """One line for reports and the CLI."""
        return (f"{self.moving_shared:,} of {self.total:,} test windows ({self.window} frames, frameskip "
                f"{self.frameskip}) occur in training; {self.static_shared:,} static windows (nothing moves) "
                f"shared apart")


def window_overlap(a: EpisodeStore, b: EpisodeStore, window: int, frameskip: int = 1,
                   episodes_a=None, episodes_b=None) -> OverlapReport:
    """Count the windows of ``b`` (its ``episodes_b``, default all) that occur in ``a`` (``episodes_a``).

    ``a`` and ``b`` may be the same store with different episode selections (e.g. the
    train and val split of one store).
    """
    if int(window) != window or window < 1 or int(frameskip) != frameskip or frameskip < 1:
        raise WMUsageError(f"overlap: window and frameskip must be positive integers, got {window} and {frameskip}")
    if (a.obs_key, a.obs_shape, a.obs_dtype) != (b.obs_key, b.obs_shape, b.obs_dtype):
        raise WMUsageError(f"overlap: the stores hold different observations ({a.obs_key} {a.obs_shape} {a.obs_dtype} "
                           f"vs {b.obs_key} {b.obs_shape} {b.obs_dtype}); nothing can be shared")
    window, frameskip = int(window), int(frameskip)
    numbers: dict[bytes, int] = {}  # frame hash -> frame number, shared by both stores
    seen = set()
    for ids in _episode_frame_ids(a, _episodes(a, episodes_a, "episodes_a"), numbers):
        seen.update(_window_keys(ids, window, frameskip)[0])
    total = shared = static_total = static_shared = 0
    for ids in _episode_frame_ids(b, _episodes(b, episodes_b, "episodes_b"), numbers):
        keys, static = _window_keys(ids, window, frameskip)
        hit = np.fromiter((k in seen for k in keys), bool, len(keys))
        total += len(keys)
        shared += int(hit.sum())
        static_total += int(static.sum())
        static_shared += int((hit & static).sum())
    return OverlapReport(window, frameskip, total, shared, static_total, static_shared)


def _episodes(store: EpisodeStore, episodes, what: str) -> np.ndarray:
    if episodes is None:
        return np.arange(store.num_episodes)
    episodes = np.asarray(episodes, np.int64).reshape(-1)
    if len(episodes) and (episodes.min() < 0 or episodes.max() >= store.num_episodes):
        raise WMUsageError(f"overlap: {what} must index the {store.num_episodes} episodes of '{store.path}'")
    return np.unique(episodes)


def _episode_frame_ids(store: EpisodeStore, episodes: np.ndarray, numbers: dict):
    """Yield, per selected episode, the frame number of each of its rows."""
    if not len(episodes):
        return
    chunk = store.chunk_rows("obs")
    row_bytes = int(np.prod(store.obs_shape, dtype=np.int64)) * store.obs_dtype.itemsize
    block = max(chunk, (BLOCK_BYTES // max(row_bytes, 1)) // chunk * chunk)
    # Contiguous runs of episodes are read in one pass: no chunk is decoded twice.
    runs = np.split(episodes, np.flatnonzero(np.diff(episodes) != 1) + 1)
    for run in runs:
        start, stop = int(store.episode_starts[run[0]]), int(store.episode_ends[run[-1]])
        ids = np.empty(stop - start, np.int64)
        row = start
        while row < stop:
            end = min(stop, (row // block + 1) * block)  # block-aligned, so reads are whole chunks
            frames = store.read("obs", row, end)
            for i, frame in enumerate(frames):
                digest = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
                ids[row - start + i] = numbers.setdefault(digest, len(numbers))
            row = end
        for e in run:
            yield ids[int(store.episode_starts[e]) - start:int(store.episode_ends[e]) - start]


def _window_keys(ids: np.ndarray, window: int, frameskip: int) -> tuple[list[bytes], np.ndarray]:
    """(key of every window of one episode, whether nothing moves in it)."""
    span = (window - 1) * frameskip
    count = len(ids) - span
    if count <= 0:
        return [], np.zeros(0, bool)
    cols = np.stack([ids[k * frameskip:k * frameskip + count] for k in range(window)], axis=1)
    static = (cols == cols[:, :1]).all(axis=1)
    # A 16-byte digest per window keeps the set's size independent of the window length.
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in cols], static
