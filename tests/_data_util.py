"""Shared helpers for the dataset tests: stores whose every row says where it came from."""

from __future__ import annotations

import numpy as np

from wm_framework.data.writer import StoreWriter

N_ACTIONS = 5


def row_episode(row0: int, rows: int, discrete: bool = True, action_dim: int = 2) -> dict:
    """An episode whose rows encode their global row number (obs pixels and label 'row')."""
    r = np.arange(row0, row0 + rows)
    obs = np.zeros((rows, 4, 4, 2), np.uint8)
    obs[..., 0] = (r % 256)[:, None, None]
    obs[..., 1] = (r // 256)[:, None, None]
    if discrete:
        action = (r * 7) % N_ACTIONS
        action[-1] = -1
    else:
        action = np.stack([r + 0.5 * j for j in range(action_dim)], axis=1).astype(np.float32)
        action[-1] = np.nan
    flags = np.zeros(rows, bool)
    ep = {"obs": obs, "action": action, "reward": np.r_[np.ones(rows - 1), 0.0].astype(np.float32),
          "terminated": flags.copy(), "truncated": flags.copy(), "labels/row": r.astype(np.float32),
          "labels/half": (r / 2).astype(np.float32)}
    ep["terminated"][-1] = True
    return ep


def make_row_store(path, lengths, policies=None, discrete: bool = True) -> None:
    """A store of episodes with the given row counts (policy names cycle through ``policies``)."""
    policies = policies or ["a"]
    action_spec = {"type": "discrete", "n": N_ACTIONS} if discrete else {"type": "continuous", "dim": 2}
    w = StoreWriter(path, env={"name": "synthetic", "params": {}}, obs_spec={"key": "pixels", "shape": [4, 4, 2], "dtype": "uint8"},
                    action_spec=action_spec, label_names=["row", "half"])
    row = 0
    for i, n in enumerate(lengths):
        w.append_episode(row_episode(row, n, discrete), policies[i % len(policies)], seed=i)
        row += n


def global_row(obs: np.ndarray) -> np.ndarray:
    """Decode the global row number from row-store observations [..., 4, 4, 2]."""
    return obs[..., 0, 0, 0].astype(np.int64) + 256 * obs[..., 0, 0, 1].astype(np.int64)
