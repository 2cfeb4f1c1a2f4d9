"""Integrity of a store's episode index and files, checked without decoding a row.

Why apart from the full check (``inspect.validate_store``): the writer runs these before
it appends. Opening trusts the strictly increasing prefix of ``episodes/ends`` (a kill
mid-commit leaves fill values there, which the writer then drops), so a damaged index,
a lost ``ends`` chunk that reads back as zeros, looked like "0 episodes" and the next
collect overwrote every episode. Three facts tell damage from an interrupted commit:

* an interrupted commit leaves only fill values (0) after the valid prefix; any other
  value there (negative, non-increasing) is damage;
* the writer records the committed episode count in the root attribute
  ``committed_episodes`` after each commit; fewer valid entries than that is damage
  (a kill between the index write and the attribute leaves more, never fewer);
* every chunk is written, fill-only ones included (``write_empty_chunks``), so a chunk
  file missing below the committed rows or entries is damage.

Symlinks inside a store that point out of it are refused too: reading or writing through
one touches files the store does not own.
"""

from __future__ import annotations

import os

import numpy as np

from wm_framework.safety import symlinks_leaving
from wm_framework.data.store import INDEX_ARRAYS, committed_episode_count, expected_columns, lookup_arrays

#: Root attribute: episodes committed so far (a lower bound on the valid index entries).
WATERMARK = "committed_episodes"


def index_problems(ends: np.ndarray, attrs: dict) -> list[str]:
    """Problems of the raw ``episodes/ends`` values against the commit protocol."""
    problems = []
    n = committed_episode_count(ends)
    tail = np.flatnonzero(ends[n:] != 0)
    if len(tail):
        i = n + int(tail[0])
        prev = int(ends[i - 1]) if i else 0
        problems.append(f"array 'episodes/ends': entry {i} is {int(ends[i])} after {prev}; "
                        "episode ends must be positive and strictly increasing")
    mark = attrs.get(WATERMARK)
    if isinstance(mark, int) and not isinstance(mark, bool) and n < mark:
        problems.append(f"array 'episodes/ends': {n} valid entries but {mark} episodes were committed "
                        "(a chunk of the index was lost or overwritten)")
    return problems


def chunk_file_problems(path: str, arrays: dict, needed: dict[str, int]) -> list[str]:
    """Chunk files missing below ``needed[name]`` rows/entries of each array (local stores)."""
    if "://" in path:
        return []
    out = []
    for name, n in needed.items():
        arr = arrays[name]
        rows = max(int(arr.chunks[0]), 1)
        for i in range(-(-int(n) // rows)):
            key = os.path.join(path, *name.split("/"), "c", str(i), *(["0"] * (arr.ndim - 1)))
            if not os.path.exists(key):
                out.append(f"array '{name}': chunk {i} (rows {i * rows}-{min((i + 1) * rows, n)}) is missing")
                break
    return out


def symlink_problems(path: str) -> list[str]:
    """Symlinks under a local store that lead outside it (named by the array they sit in)."""
    if "://" in path or not os.path.isdir(path):
        return []
    return [f"array '{_array_of(rel)}': '{rel}' is a symlink to '{target}', outside the store"
            for rel, target in symlinks_leaving(path)]


def _array_of(rel: str) -> str:
    parts = rel.split(os.sep)
    return "/".join(parts[:parts.index("c")]) if "c" in parts else parts[0]


def quick_problems(path: str, group, attrs: dict) -> list[str]:
    """Index, watermark, chunk-file and symlink problems of an opened group (no decoding)."""
    problems = symlink_problems(path)
    arrays, missing, unreadable = lookup_arrays(group, attrs)
    if unreadable is not None:
        return problems + [f"array '{unreadable[0]}' has unreadable metadata ({type(unreadable[1]).__name__})"]
    if "episodes/ends" in missing:
        return problems + ["missing array 'episodes/ends'"]
    try:
        ends = np.asarray(arrays["episodes/ends"][:])
    except Exception as e:  # noqa: BLE001
        return problems + [f"array 'episodes/ends' is unreadable ({type(e).__name__})"]
    n_ep = committed_episode_count(ends)
    if missing and n_ep:  # an array of a store that holds episodes was deleted
        return problems + [f"missing array '{missing[0]}'"]
    if missing:  # no episode yet (a store from an older version): the writer adds the array
        return problems + index_problems(ends, attrs)
    mark = attrs.get(WATERMARK)
    entries = max(n_ep, mark if isinstance(mark, int) and not isinstance(mark, bool) else 0)
    rows = int(ends[n_ep - 1]) if n_ep else 0
    needed = {name: min(entries, arrays[name].shape[0]) for name in INDEX_ARRAYS}
    needed.update({name: min(rows, arrays[name].shape[0]) for name in expected_columns(attrs)})
    return problems + index_problems(ends, attrs) + chunk_file_problems(path, arrays, needed)
