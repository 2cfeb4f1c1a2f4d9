"""Batched open-loop rollouts of many candidate action sequences from one context.

A planning step scores N candidate sequences (300 in the published planner). They share the context,
so the context is encoded once and its latents are *expanded* (no copy) to N rows;
every predictor call then serves all N candidates at once. Each step is
:meth:`wm_framework.model.WorldModel.step`, the step of ``WorldModel.rollout`` too, so
a plan scores what an open-loop evaluation would predict (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PlanContext:
    """What the planner knows at decision time (batch size 1).

    obs: prepared observations ``[1, C, ...]`` (C >= 1 context frames, the last is now).
    z: their latents ``[1, C, D]``.
    actions: float action blocks taken between the context frames ``[1, C-1, A]``.
    """

    obs: torch.Tensor
    z: torch.Tensor
    actions: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_obs(cls, model, obs: torch.Tensor, actions: torch.Tensor | None = None) -> "PlanContext":
        """Encode prepared ``obs [1,C,...]``; ``actions [1,C-1,A]`` (None: no past actions)."""
        z = model.encode(obs)
        if actions is None:
            actions = z.new_zeros(1, obs.shape[1] - 1, model.action_spec.block_dim)
        return cls(obs, z, actions.to(z.dtype))


@torch.no_grad()
def rollout_candidates(model, context: PlanContext, future: torch.Tensor, share_prefix: bool = True) -> dict:
    """Roll out ``future [N, H, A]`` float action blocks from one context, batched.

    Returns ``latents [N, H, D]`` (the predicted latent after each block), ``preds``
    (the predictor's raw outputs ``[N, H, ...]``) and ``z_prev [N, H, D]`` (the latent
    each prediction started from; cost functions that turn a prediction into a state,
    such as a predictor's ``absolute_next_state``, need it). Each step computes what
    :meth:`WorldModel.step` (the one eval and surprise use) does; for latent models the
    context steps before the candidates' first action run once for all of them
    (``share_prefix``; False repeats them per candidate, the benchmark's baseline).
    """
    n, horizon = future.shape[:2]
    c0 = context.z.shape[1]
    z_hist = context.z.expand(n, -1, -1)
    obs_hist = model.frame_space(context.obs).expand(n, *context.obs.shape[1:]) if model.predicts_obs else None
    actions = torch.cat([context.actions.expand(n, -1, -1), future.to(context.z.dtype)], 1)
    # Context steps whose action is a past one are the same for every candidate: a latent
    # model predicts with them computed once (WorldModel.predict_next_shared).
    z_shared, a_shared = context.z[:, :c0 - 1], context.actions[:, :c0 - 1].to(context.z.dtype)
    latents, preds, prev = [], [], []
    for h in range(horizon):
        if model.predicts_obs or not share_prefix:
            pred_t, z_next, frame = model.step(z_hist, actions[:, : c0 + h], obs_hist)
        else:
            pred_t = model.predict_next_shared(z_shared, a_shared, z_hist[:, c0 - 1:], actions[:, c0 - 1: c0 + h])
            z_next, frame = model.latent_after(pred_t, z_hist[:, -1]), None
        if frame is not None:
            obs_hist = torch.cat([obs_hist, frame.unsqueeze(1)], 1)
        latents.append(z_next)
        preds.append(pred_t)
        prev.append(z_hist[:, -1])
        z_hist = torch.cat([z_hist, z_next.unsqueeze(1)], 1)
    return {"latents": torch.stack(latents, 1), "preds": torch.stack(preds, 1), "z_prev": torch.stack(prev, 1)}


@torch.no_grad()
def rollout_one_by_one(model, context: PlanContext, future: torch.Tensor) -> dict:
    """The same rollouts, one candidate at a time (the baseline the benchmark compares to)."""
    outs = [rollout_candidates(model, context, future[i:i + 1]) for i in range(future.shape[0])]
    preds = None if outs[0]["preds"] is None else torch.cat([o["preds"] for o in outs])
    return {"latents": torch.cat([o["latents"] for o in outs]), "preds": preds,
            "z_prev": torch.cat([o["z_prev"] for o in outs])}
