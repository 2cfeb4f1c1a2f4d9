"""Inspecting a store: the summary behind ``wm data info`` and the full ``validate`` check."""

from __future__ import annotations

import os

import numpy as np

from wm_framework.data.integrity import quick_problems
from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError


def store_info(path) -> dict:
    """A JSON-ready summary of the store at ``path`` (raises WMUsageError if unreadable)."""
    store = EpisodeStore.open(path)
    rewards = store.read("reward", 0, store.num_frames).astype(np.float64)
    returns = np.add.reduceat(rewards, store.episode_starts) if store.num_episodes else np.zeros(0)
    steps = store.episode_lengths - 1  # T actions per episode of T+1 rows
    policies = store.policies()
    by_policy = {p: store.episode_policy == p for p in policies}
    arrays, bytes_raw = {}, 0
    for name in store.columns() + ["episodes/ends", "episodes/policy", "episodes/seed"]:
        arr = store._array(name)
        dtype = "str" if np.dtype(arr.dtype).kind == "O" else str(arr.dtype)
        arrays[name] = {"shape": list(arr.shape), "dtype": dtype, "chunks": list(arr.chunks)}
        if name.startswith("episodes/"):
            continue
        bytes_raw += int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize * store.num_frames
    flags = {c: store.read(c, 0, store.num_frames)[store.episode_ends - 1] for c in ("terminated", "truncated")}
    return {
        "path": store.path,
        "schema_version": store.attrs["schema_version"],
        "env": store.env,
        "obs": store.attrs["obs"],
        "obs_layout": obs_layout(store),
        "action": store.action_spec,
        "label_names": store.label_names,
        "plugin_versions": store.attrs.get("plugin_versions", {}),
        "episodes": store.num_episodes,
        "frames": store.num_frames,
        "steps": int(steps.sum()),
        "policies": {p: int(m.sum()) for p, m in by_policy.items()},
        "mean_return": {p: float(returns[m].mean()) for p, m in by_policy.items()},
        "mean_length": {p: float(steps[m].mean()) for p, m in by_policy.items()},
        "terminated": int(flags["terminated"].sum()),
        "truncated": int(flags["truncated"].sum()),
        "bytes_on_disk": bytes_on_disk(store.path),
        "bytes_raw": bytes_raw,
        "arrays": arrays,
    }


def obs_layout(store: EpisodeStore) -> str:
    """How to read the obs shape: '(H, W, C)' for pixels (plus the source layout of an
    imported store, e.g. 'from channel-first (C, H, W)'), '(D,)' for states."""
    if store.obs_key != "obs/pixels":
        return "(D,)"
    source = store.env.get("params", {}).get("layout")
    if source is None:
        return "(H, W, C)"
    from wm_framework.data.layout import describe

    return f"(H, W, C), imported from {describe(source)}"


def bytes_on_disk(path: str) -> int:
    """Total size of the files under ``path`` (local directory or fsspec URL)."""
    if "://" in path:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        return int(fs.du(root))
    total = 0
    for dirpath, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def validate_store(path) -> list[str]:
    """Every problem found by decoding every committed row of the store; [] means valid.

    Checks, beyond what opening checks: every chunk decodes; each episode's last row
    and only it has ``terminated`` or ``truncated`` set (not both); the last row holds
    padding action (-1 / NaN) and reward 0; other rows hold valid actions (in range /
    finite); rewards and states are finite; policies are non-empty names.
    """
    try:
        store = EpisodeStore.open(path)
    except WMUsageError as e:
        return [str(e)]
    problems: list[str] = []
    n = store.num_frames
    last = np.zeros(n, bool)
    last[store.episode_ends - 1] = True

    def full(name):
        """Decode a column block by block (whole chunks), reporting undecodable chunks."""
        chunk = store.chunk_rows(name)
        parts = []
        for a in range(0, n, max(chunk, 1)):
            b = min(a + chunk, n)
            try:
                part = store.read(name, a, b)
            except Exception as e:  # a corrupt chunk: report it and keep checking the rest
                problems.append(f"array '{store.column_name(name)}': rows {a}-{b} do not decode ({type(e).__name__})")
                return None
            parts.append(part if name != "obs" else _obs_check(store, part, a, problems))
        return np.concatenate(parts) if parts else None

    problems += quick_problems(str(store.path), store._group, store.attrs)  # index, chunk files, symlinks
    full("obs")  # decoded for the check only; never held whole
    term, trunc = full("terminated"), full("truncated")
    if term is not None and trunc is not None:
        ended = term | trunc
        if (~ended[last]).any():
            e = int(np.flatnonzero(~ended[last])[0])
            problems.append(f"array 'terminated'/'truncated': episode {e} has neither flag on its last row")
        if (ended & ~last).any():
            r = int(np.flatnonzero(ended & ~last)[0])
            problems.append(f"array 'terminated'/'truncated': row {r} is flagged but is not an episode's last row")
        if (term & trunc).any():
            problems.append(f"array 'terminated'/'truncated': row {int(np.flatnonzero(term & trunc)[0])} has both flags")
    action = full("action")
    if action is not None:
        if store.action_spec["type"] == "discrete":
            pad_ok = action[last] == -1
            valid = (action[~last] >= 0) & (action[~last] < int(store.action_spec["n"]))
        else:
            pad_ok = np.isnan(action[last]).all(axis=-1)
            valid = np.isfinite(action[~last]).all(axis=-1)
        if (~pad_ok).any():
            problems.append(f"array 'action': episode {int(np.flatnonzero(~pad_ok)[0])} has no padding action on its last row")
        if (~valid).any():
            r = int(np.flatnonzero(~last)[np.flatnonzero(~valid)[0]])
            problems.append(f"array 'action': row {r} holds an invalid action {action[r]}")
    reward = full("reward")
    if reward is not None:
        if not np.isfinite(reward).all():
            problems.append(f"array 'reward': row {int(np.flatnonzero(~np.isfinite(reward))[0])} is not finite")
        elif (reward[last] != 0).any():
            problems.append("array 'reward': an episode's last row has a non-zero reward")
    for name in store.label_names:
        full(f"labels/{name}")
    if (np.char.str_len(store.episode_policy.astype(str)) == 0).any():
        problems.append("array 'episodes/policy': an episode has an empty policy name")
    return problems


def _obs_check(store: EpisodeStore, part: np.ndarray, start: int, problems: list[str]) -> np.ndarray:
    if part.dtype.kind == "f" and not np.isfinite(part).all():
        bad = start + int(np.flatnonzero(~np.isfinite(part.reshape(len(part), -1)).all(axis=1))[0])
        problems.append(f"array '{store.obs_key}': row {bad} is not finite")
    return part[:0]  # nothing kept: obs can be large


def uncommitted_rows(store: EpisodeStore) -> int:
    """Rows past the last committed episode (an interrupted append; ignored and later overwritten)."""
    return int(store.zarr_array("obs").shape[0]) - store.num_frames
