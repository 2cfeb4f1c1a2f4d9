"""Score GPT state models in ONE common space, whatever they were trained to predict.

Val losses of the sweep's configs are measured on different targets (normalised
absolute next state vs normalised delta, with delta statistics that differ per
config), so they cannot be ranked against each other. Here every config is scored on:

* ``common_mse``: one-step (teacher-forced) MSE of the predicted ABSOLUTE next state,
  in normalised absolute-state units (one set of state statistics for all configs);
* ``rollout_mse``: open-loop rollouts (predictions fed back, ensemble mean) from
  ``context`` ground-truth steps; the MSE of the step ``h`` ahead, in the same units,
  for each horizon ``h``;
* ``own_loss``: the config's own training loss (its target space), on the same windows.

``groups`` (name -> [first, end) state dims, e.g. ``{position = [0, 7], velocity = [7, 14]}``
for the ARX5 joint state) splits the common-space errors by dimension group, which is
what tests an explanation like "delta targets fail on the velocity dims".

Everything takes plain modules and tensors (no run directory), so it is testable alone.
"""

from __future__ import annotations

import numpy as np
import torch

from wm_plugins.gpt_state.predictor import ensemble_mse


def windows_from_sampler(sampler, max_windows: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``states [W, L, D]`` and flattened ``actions [W, L, fs*A]`` from a core WindowSampler.

    The windows are a seeded random subset, identical for every config that shares the
    store and split (they do in a sweep).
    """
    n = len(sampler)
    if n == 0:
        raise ValueError("the sampler has no windows")
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:max_windows])
    batch = sampler.get(idx)
    states = torch.as_tensor(np.asarray(batch["obs"], dtype=np.float32))
    actions = torch.as_tensor(np.asarray(batch["action"], dtype=np.float32)).flatten(2)
    return states, torch.nan_to_num(actions, nan=0.0)


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def group_means(per_dim: torch.Tensor, groups: dict | None) -> dict[str, float]:
    """Mean of a per-dimension error ``[..., D]`` over each group's dims [first, end)."""
    return {g: float(per_dim[..., int(a):int(b)].mean()) for g, (a, b) in (groups or {}).items()}


@torch.no_grad()
def one_step_scores(encoder, predictor, states, actions, common_std, batch_size: int = 128, groups=None) -> dict:
    """Teacher-forced scores over whole windows ``[W, L, ...]``: ``common_mse``, ``own_loss`` and,
    per dim group, ``common_mse_<group>``."""
    per_dim, own, count = 0.0, 0.0, 0
    for sl in _chunks(states.shape[0], batch_size):
        s, a = states[sl], actions[sl]
        z = encoder(s)
        pred = predictor(z[:, :-1], a[:, :-1])
        own += float(ensemble_mse({"pred": pred, "target": predictor.make_target(z, s)})) * s.shape[0]
        nxt = predictor.absolute_next_state(pred, z[:, :-1]).mean(-2)
        err = (nxt - s[:, 1:]) / common_std
        per_dim = per_dim + err.pow(2).double().mean((0, 1)) * s.shape[0]
        count += s.shape[0]
    per_dim = per_dim / count
    out = {"common_mse": float(per_dim.mean()), "own_loss": own / count}
    out.update({f"common_mse_{g}": v for g, v in group_means(per_dim, groups).items()})
    return out


@torch.no_grad()
def rollout_states(encoder, predictor, states, actions, context: int, horizon: int) -> torch.Tensor:
    """Open-loop rollout: raw predicted states ``[W, horizon, D]`` for steps ``context .. context+horizon-1``.

    ``states [W, >= context, D]`` (only the first ``context`` are seen), ``actions [W,
    >= context+horizon-1, A]`` raw. Keeps the last ``predictor.history`` steps as context.
    """
    if context < 1 or horizon < 1:
        raise ValueError("context and horizon must be >= 1")
    if actions.shape[1] < context + horizon - 1:
        raise ValueError(f"need {context + horizon - 1} action steps, got {actions.shape[1]}")
    keep = int(getattr(predictor, "history", 0) or context + horizon)
    z_hist = encoder(states[:, :context])
    outs = []
    for h in range(horizon):
        t = context + h  # steps known so far
        zin = z_hist[:, -keep:]
        ain = actions[:, t - zin.shape[1]:t]
        pred_t = predictor(zin, ain)[:, -1]
        next_raw = predictor.absolute_next_state(pred_t, zin[:, -1]).mean(-2)
        outs.append(next_raw)
        z_hist = torch.cat([z_hist, encoder(next_raw.unsqueeze(1))], dim=1)
    return torch.stack(outs, dim=1)


@torch.no_grad()
def rollout_errors(encoder, predictor, states, actions, common_std, horizon: int, context: int = 8,
                   batch_size: int = 128) -> torch.Tensor:
    """Mean squared error (normalised units) of every rolled-out step and state dim: ``[horizon, D]``."""
    if states.shape[1] < context + horizon:
        raise ValueError(f"windows of {states.shape[1]} steps are too short for context {context} + horizon {horizon}")
    sq, n = 0.0, 0
    for sl in _chunks(states.shape[0], batch_size):
        s, a = states[sl], actions[sl]
        pred = rollout_states(encoder, predictor, s, a, context, horizon)
        sq = sq + ((pred - s[:, context:context + horizon]) / common_std).pow(2).double().sum(0)  # [H, D]
        n += s.shape[0]
    return sq / n


def rollout_scores(encoder, predictor, states, actions, common_std, horizons=(1, 8, 32), context: int = 8,
                   batch_size: int = 128) -> dict:
    """{h: MSE of the state h steps ahead (normalised units)} from windows of >= context+max(h) steps."""
    horizons = sorted(int(h) for h in horizons)
    per_step = rollout_errors(encoder, predictor, states, actions, common_std, horizons[-1], context, batch_size).mean(-1)
    return {h: float(per_step[h - 1]) for h in horizons}


def score_config(encoder, predictor, states, actions, common_std=None,
                 horizons=(1, 8, 32), context: int = 8, batch_size: int = 128, groups=None) -> dict:
    """All common-space scores of one config on raw windows of >= context+max(horizons) steps.

    The one-step scores use the first ``predictor.history + 1`` steps of each window.
    ``common_std`` (normalised units = raw error / std) defaults to the predictor's
    absolute state std; a sweep passes ONE std for all configs. Returns ``common_mse``,
    ``own_loss``, ``rollout_mse`` {h: mse}, ``rollout_curve`` (steps 1..max h) and, per
    dim group g, ``common_mse_<g>`` and ``rollout_mse_<g>`` {h: mse}.
    """
    encoder.eval(); predictor.eval()
    common_std = predictor.state_std if common_std is None else torch.as_tensor(common_std, dtype=torch.float32)
    length = min(states.shape[1], int(predictor.history) + 1)
    out = one_step_scores(encoder, predictor, states[:, :length], actions[:, :length], common_std, batch_size, groups)
    horizons = sorted(int(h) for h in horizons)
    err = rollout_errors(encoder, predictor, states, actions, common_std, horizons[-1], context, batch_size)  # [H, D]
    out["rollout_mse"] = {h: float(err[h - 1].mean()) for h in horizons}
    out["rollout_curve"] = err.mean(-1).tolist()
    for g in groups or {}:
        out[f"rollout_mse_{g}"] = {h: group_means(err[h - 1], {g: groups[g]})[g] for h in horizons}
    return out
