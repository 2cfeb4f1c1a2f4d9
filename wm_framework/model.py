"""The world-model composition every model in wm-framework shares.

``z_t = encoder(obs_t)``, ``pred_{t+1} = predictor(z_<=t, a_<=t)``. A training window of
L frames is encoded whole; the predictor sees the first L-1 latents and action blocks
and predicts, causally, one step ahead at each position. What ``pred`` is compared to
is the predictor's choice (optional hooks below), so the same composition serves a
JEPA (latent targets), a next-frame CNN (pixel targets) and a GPT state model (state
or state-delta targets).

Optional predictor hooks (duck-typed, all have defaults; only the methods of
:class:`WorldModel` call them, so eval, planning and surprise share one open-loop step,
:meth:`WorldModel.step`):

- ``make_target(z, obs) -> Tensor[B, L-1, D_out]``: the training target aligned with
  ``pred``. Default: ``z[:, 1:]`` (the next latent, not detached: the published JEPA's choice).
- ``history: int``: how many past steps the predictor attends to (rollouts keep that many).
- ``next_latent(pred_t, z_t) -> z_{t+1}``: turn one prediction into the next latent for
  open-loop rollouts in latent space. Default: ``pred_t``.
- ``next_obs(pred_t) -> obs[B, C, H, W]``: for models whose prediction is an observation;
  when present, rollouts decode, feed the frame back and re-encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ActionSpec:
    """How actions are stored and turned into float blocks for the predictor."""

    kind: str  # "discrete" | "continuous"
    n: int  # number of discrete actions, or the continuous action dimension
    frameskip: int = 1  # raw actions per frame (one block per frame)

    @property
    def block_dim(self) -> int:
        """Width of the float action block the predictor receives per frame."""
        return self.frameskip * self.n

    @classmethod
    def from_store_attrs(cls, spec: dict, frameskip: int = 1) -> "ActionSpec":
        return cls(spec["type"], int(spec["n"] if spec["type"] == "discrete" else spec["dim"]), frameskip)


def prepare_obs(obs: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [B,T,H,W,C] -> float [B,T,C,H,W] in [0,1]; float states pass through.

    Runs on whatever device ``obs`` is on, so uint8 frames cross to the GPU at a quarter
    of the float size and are converted there.
    """
    if obs.dtype == torch.uint8:
        return obs.permute(0, 1, 4, 2, 3).float().div_(255.0)
    return obs.float()


def prepare_actions(action: torch.Tensor, spec: ActionSpec) -> torch.Tensor:
    """Stored action blocks -> float [B,T,frameskip*n].

    Discrete ``[B,T,fs]`` int64 becomes one-hot per raw step (padding -1 -> all zeros);
    continuous ``[B,T,fs,A]`` is flattened with NaN (padding, first step) -> 0.
    """
    if spec.kind == "discrete":
        a = action.long()
        if a.dim() == 2:
            a = a.unsqueeze(-1)
        valid = (a >= 0).unsqueeze(-1)
        onehot = torch.nn.functional.one_hot(a.clamp(min=0), spec.n).float() * valid
        return onehot.flatten(2)
    a = action.float()
    if a.dim() == 3:
        a = a.unsqueeze(2)
    return torch.nan_to_num(a, nan=0.0).flatten(2)


class WorldModel(nn.Module):
    """encoder + predictor with the one-step-ahead training forward and open-loop rollouts."""

    def __init__(self, encoder: nn.Module, predictor: nn.Module, action_spec: ActionSpec):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.action_spec = action_spec

    @property
    def history(self) -> int:
        return int(getattr(self.predictor, "history", 0) or 0)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Prepared obs [B,T,...] -> latents [B,T,D]."""
        return self.encoder(obs)

    def forward(self, batch: dict) -> dict:
        """One-step-ahead teacher-forced pass over a window; returns the loss inputs."""
        obs = prepare_obs(batch["obs"])
        act = prepare_actions(batch["action"], self.action_spec)
        z = self.encoder(obs)
        pred = self.predictor(z[:, :-1], act[:, :-1])
        make_target = getattr(self.predictor, "make_target", None)
        target = make_target(z, obs) if make_target is not None else z[:, 1:]
        return {"z": z, "pred": pred, "target": target, "obs": obs, "action": act}

    # -- the one open-loop step (eval, planning and surprise all go through these) ---------
    @property
    def predicts_obs(self) -> bool:
        """Whether predictions are observations (the predictor has ``next_obs``): rollouts then
        decode each prediction, feed the frame back and re-encode it."""
        return getattr(self.predictor, "next_obs", None) is not None

    def frame_space(self, obs: torch.Tensor) -> torch.Tensor:
        """Prepared obs in the space predicted frames come back in (the encoder's ``preprocess``,
        e.g. gray 84x84, for observation-predicting models; unchanged otherwise)."""
        preprocess = getattr(self.encoder, "preprocess", None)
        return preprocess(obs) if self.predicts_obs and preprocess is not None else obs

    def predict_next(self, z_hist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The predictor's output for the step after the last latent of ``z_hist [B,T,D]``, given
        the action block at each of those T frames ``[B,T,A]``; only the last ``history`` are used."""
        keep = self.history or None
        if keep is not None:
            z_hist, actions = z_hist[:, -keep:], actions[:, -keep:]
        return self.predictor(z_hist, actions)[:, -1]

    def predict_next_shared(self, z_shared: torch.Tensor, a_shared: torch.Tensor, z_own: torch.Tensor,
                            a_own: torch.Tensor) -> torch.Tensor:
        """:meth:`predict_next` of ``cat(shared, own)`` for N rows whose first steps
        (``z_shared [1,P,D]``, ``a_shared [1,P,A]``) are the same, ``z_own``/``a_own`` ``[N,S,...]``.

        With the predictor's ``predict_last_shared`` capability the shared steps inside the
        history window run once, not N times (planning: the context before the candidates'
        first action); otherwise, or once the window has slid past them, the plain path.
        """
        keep = self.history or None
        drop = max(0, z_shared.shape[1] + z_own.shape[1] - keep) if keep else 0
        z_shared, a_shared = z_shared[:, drop:], a_shared[:, drop:]
        shared_fn = getattr(self.predictor, "predict_last_shared", None)
        if z_shared.shape[1] and shared_fn is not None and not self.training:
            return shared_fn(z_shared, a_shared, z_own, a_own)
        n = z_own.shape[0]
        z = torch.cat([z_shared.expand(n, -1, -1), z_own], 1)
        a = torch.cat([a_shared.expand(n, -1, -1), a_own.to(a_shared.dtype)], 1)
        return self.predict_next(z, a)

    def decode_obs(self, pred: torch.Tensor) -> torch.Tensor:
        """An observation-predicting model's prediction as a frame ``[B, C, H, W]`` (``next_obs``)."""
        return self.predictor.next_obs(pred)

    def latent_after(self, pred: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        """A latent model's prediction as the next latent (``next_latent``; default the prediction)."""
        next_latent = getattr(self.predictor, "next_latent", None)
        return next_latent(pred, z_prev) if next_latent is not None else pred

    def step(self, z_hist: torch.Tensor, actions: torch.Tensor, obs_hist: torch.Tensor | None = None):
        """One open-loop step: ``(pred, z_next, frame)``.

        ``z_hist [B,T,D]`` and ``actions [B,T,A]`` as in :meth:`predict_next`; for
        observation-predicting models ``obs_hist [B,T,...]`` (in :meth:`frame_space`) too: the
        predicted ``frame`` is appended to it and re-encoded into ``z_next``. Latent models
        return ``frame = None``.
        """
        pred = self.predict_next(z_hist, actions)
        if not self.predicts_obs:
            return pred, self.latent_after(pred, z_hist[:, -1]), None
        frame = self.decode_obs(pred)
        window = torch.cat([obs_hist, frame.unsqueeze(1)], 1)
        if self.history:
            window = window[:, -self.history:]
        return pred, self.encoder(window)[:, -1], frame

    @torch.no_grad()
    def rollout(self, obs_context: torch.Tensor, actions: torch.Tensor) -> dict:
        """Open-loop rollout: predictions are fed back, never the ground truth.

        ``obs_context``: prepared obs [B,C0,...] (C0 >= 1 context frames).
        ``actions``: float action blocks [B,C0-1+H,A] for the context and H future steps.
        Returns ``latents`` [B,H,D] and, for observation-predicting models, ``obs`` [B,H,...].
        """
        c0 = obs_context.shape[1]
        horizon = actions.shape[1] - (c0 - 1)
        obs_hist = self.frame_space(obs_context)
        z_hist = self.encoder(obs_hist)
        out_z, out_obs = [], []
        for h in range(horizon):
            _, z_next, frame = self.step(z_hist, actions[:, : c0 + h], obs_hist)
            if frame is not None:
                out_obs.append(frame)
                obs_hist = torch.cat([obs_hist, frame.unsqueeze(1)], 1)
            out_z.append(z_next)
            z_hist = torch.cat([z_hist, z_next.unsqueeze(1)], 1)
        result = {"latents": torch.stack(out_z, 1)}
        if out_obs:
            result["obs"] = torch.stack(out_obs, 1)
        return result

    # -- NumPy in, NumPy out: arrays in the store's layout (notebooks, other tools) ----------
    def _store_arrays(self, obs, actions=None) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """Store-layout arrays -> (prepared obs [B,T,...], action blocks [B,T,A] or None, batched).

        Frames are uint8 ``[T,H,W,C]`` (pixels) or float ``[T,D]`` (states); actions
        ``[T]`` / ``[T,frameskip]`` (discrete) or ``[T,A]`` / ``[T,frameskip,A]`` (continuous),
        exactly as ``EpisodeStore.episode`` and ``WindowSampler.get`` return them. A leading
        batch axis ``[B,T,...]`` is kept; without one, outputs have none either.
        """
        import numpy as np

        obs = np.asarray(obs)
        batched = _is_batched(obs)
        device = next(self.parameters()).device
        obs_t = torch.from_numpy(np.ascontiguousarray(obs if batched else obs[None])).to(device)
        act_t = None
        if actions is not None:
            a = np.asarray(actions)
            act_t = prepare_actions(torch.from_numpy(np.ascontiguousarray(a if batched else a[None])).to(device),
                                    self.action_spec)
        return prepare_obs(obs_t), act_t, batched

    @staticmethod
    def _to_numpy(t: torch.Tensor, batched: bool):
        out = t.detach().float().cpu().numpy()
        return out if batched else out[0]

    @staticmethod
    def _frames_to_numpy(frames: torch.Tensor, batched: bool):
        """Predicted frames [B,H',C,h,w] in [0, 1] -> uint8 [B,H',h,w,C], the store's pixel layout."""
        out = frames.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
        return out if batched else out[0]

    @torch.no_grad()
    def encode_numpy(self, obs):
        """Latents ``[T, D]`` of store-layout frames or states ``obs`` (see :meth:`_store_arrays`)."""
        prepared, _, batched = self._store_arrays(obs)
        return self._to_numpy(self.encode(self.frame_space(prepared)), batched)

    @torch.no_grad()
    def predict_numpy(self, obs, actions) -> dict:
        """One step ahead of the last of ``obs [T, ...]`` given the actions taken at each of
        those T frames: ``{"latent": [D]}``, plus ``"frame"`` (uint8 ``[h,w,C]``, in the
        encoder's input space) for observation-predicting models."""
        import numpy as np

        obs, actions = np.asarray(obs), np.asarray(actions)
        batched = _is_batched(obs)
        t = obs.shape[1] if batched else obs.shape[0]
        out = self.rollout_numpy(obs, actions[:, :t] if batched else actions[:t])  # exactly one imagined step
        first = (lambda x: x[:, 0]) if batched else (lambda x: x[0])
        result = {"latent": first(out["latents"])}
        if "frames" in out:
            result["frame"] = first(out["frames"])
        return result

    @torch.no_grad()
    def rollout_numpy(self, obs, actions) -> dict:
        """Open loop from the context frames ``obs [C0, ...]``: ``actions`` holds the action at
        each context frame and at each imagined one, ``[C0 - 1 + H, ...]``; returns ``latents``
        ``[H, D]`` and, for observation-predicting models, ``frames`` uint8 ``[H, h, w, C]``."""
        prepared, act, batched = self._store_arrays(obs, actions)
        if act.shape[1] < prepared.shape[1]:
            raise ValueError(f"actions: need one per context frame and per imagined step (at least {prepared.shape[1]}), "
                             f"got {act.shape[1]}")
        out = self.rollout(prepared, act)
        result = {"latents": self._to_numpy(out["latents"], batched)}
        if "obs" in out:
            result["frames"] = self._frames_to_numpy(out["obs"], batched)
        return result


def _is_batched(obs) -> bool:
    """Whether store-layout ``obs`` has a leading batch axis: frames are uint8 ``[T,H,W,C]``,
    states float ``[T,D]``; anything else is refused with the shape."""
    frame_ndim = 3 if obs.dtype.kind == "u" and obs.itemsize == 1 else 1
    if obs.ndim not in (frame_ndim + 1, frame_ndim + 2):
        kind = "uint8 frames [T,H,W,C]" if frame_ndim == 3 else "float states [T,D]"
        raise ValueError(f"obs: expected {kind} (or with a leading batch axis), got shape {obs.shape}")
    return obs.ndim == frame_ndim + 2
