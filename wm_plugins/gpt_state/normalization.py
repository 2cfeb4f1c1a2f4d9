"""Representations and normalisation for the GPT state model (pure tensor functions).

Definitions (the sweep compares exactly these; docs/arx5_gpt.md explains the choice):

* **delta action** ``da_t = a_t - q_t``: the commanded joint target minus the joint
  position measured at the same step (``q_t = s_t[:n_joints]``). For a
  position-controlled arm this is the controller's position error, i.e. what drives the
  motion, and it needs nothing outside step t (``a_t - a_{t-1}`` would need the action
  before the window's first step, which a window does not have).
* **delta state** ``ds_t = s_{t+1} - s_t`` (all 14 dims, velocities included).

Everything the model sees or predicts is normalised with statistics of the training
split: absolute states/actions with the core's ``state_stats``/``action_stats``, the
deltas with statistics computed by :func:`window_statistics`.
"""

from __future__ import annotations

import torch

STD_FLOOR = 1e-5  # a dim that never moves (e.g. a gripper delta) must not divide by ~0
REPRESENTATIONS = ("absolute", "delta")


def check_representation(name: str, value: str) -> str:
    if value not in REPRESENTATIONS:
        raise ValueError(f"{name} must be 'absolute' or 'delta', got {value!r}")
    return value


# -- delta <-> absolute ---------------------------------------------------------------
def to_delta_action(action: torch.Tensor, state: torch.Tensor, n_joints: int) -> torch.Tensor:
    """a_t - q_t. ``action [..., fs*n_joints]`` (frameskip blocks), ``state [..., D]``."""
    q = state[..., :n_joints]
    blocks = action.unflatten(-1, (-1, n_joints))
    return (blocks - q.unsqueeze(-2)).flatten(-2)


def from_delta_action(delta: torch.Tensor, state: torch.Tensor, n_joints: int) -> torch.Tensor:
    """Inverse of :func:`to_delta_action`: da_t + q_t."""
    q = state[..., :n_joints]
    blocks = delta.unflatten(-1, (-1, n_joints))
    return (blocks + q.unsqueeze(-2)).flatten(-2)


def to_delta_state(next_state: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """s_{t+1} - s_t."""
    return next_state - state


def from_delta_state(delta: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_delta_state`: s_t + ds_t."""
    return state + delta


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std


def denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return x * std + mean


# -- statistics -----------------------------------------------------------------------
def stats_tensors(stats: dict | None, dim: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """{"mean": [...], "std": [...]} -> (mean, std) float32 tensors; None -> (0, 1)."""
    if stats is None:
        return torch.zeros(dim), torch.ones(dim)
    mean = torch.as_tensor(stats["mean"], dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(stats["std"], dtype=torch.float32).reshape(-1)
    if mean.numel() != dim or std.numel() != dim:
        raise ValueError(f"{name}: expected {dim} values for mean and std, got {mean.numel()} and {std.numel()}")
    return mean, std.clamp_min(STD_FLOOR)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.reshape(-1, x.shape[-1]).double()
    x = x[torch.isfinite(x).all(dim=1)]
    if x.shape[0] == 0:
        raise ValueError("no finite samples to compute normalisation statistics from")
    return x.mean(0).float(), x.std(0, unbiased=False).float().clamp_min(STD_FLOOR)


def window_statistics(states: torch.Tensor, actions: torch.Tensor, n_joints: int) -> dict:
    """All four statistics from windows of raw data.

    ``states [B, L, D]`` consecutive frames; ``actions [B, L, fs*n_joints]`` the action
    block taken at each frame (NaN/padding rows are skipped). Delta states come from
    consecutive frames of a window, so they never straddle two episodes.
    """
    states = states.float()
    actions = actions.float()
    a_valid = actions[:, :-1]
    s_cur = states[:, :-1]
    fs_blocks = actions.shape[-1] // n_joints
    return {
        "state": _moments(states),
        "action": _moments(a_valid.unflatten(-1, (fs_blocks, n_joints))),
        "delta_action": _moments(to_delta_action(a_valid, s_cur, n_joints).unflatten(-1, (fs_blocks, n_joints))),
        "delta_state": _moments(to_delta_state(states[:, 1:], s_cur)),
    }


def episode_arrays_to_windows(obs, action, episode_ends, length: int, stride: int | None = None):
    """Cut time-major episode arrays into non-overlapping windows (for statistics and scoring).

    ``obs [N, D]``, ``action [N, A]`` store rows (row t: obs_t and the action taken at it),
    ``episode_ends [E]`` exclusive end row of each episode. Returns float tensors
    ``states [W, length, D]`` and ``actions [W, length, A]``.
    """
    obs = torch.as_tensor(obs, dtype=torch.float32)
    action = torch.as_tensor(action, dtype=torch.float32)
    stride = stride or length
    starts, begin = [], 0
    for end in [int(e) for e in episode_ends]:
        # The window's last frame may be the episode's final row (its action is padding,
        # never used: frame L-1 is only ever a target).
        starts.extend(range(begin, end - length + 1, stride))
        begin = end
    if not starts:
        raise ValueError(f"no episode is long enough for windows of {length} steps")
    idx = torch.as_tensor(starts).unsqueeze(1) + torch.arange(length)
    return obs[idx], action[idx]
