"""`gpt_ensemble` predictor and `state_norm` encoder: the GPT state world model in the core's terms.

The core composes ``z = encoder(obs)``, ``pred = predictor(z[:, :-1], a[:, :-1])``,
``target = predictor.make_target(z, obs)``. Here:

* ``z`` = the raw 14-D state normalised with the training split's ``state_stats``
  (encoder `state_norm`; the predictor holds the same statistics to undo it);
* the action input is the absolute target or the delta ``a_t - q_t``, normalised
  (``action_representation``);
* ``pred [B, T, K, D]`` and the target are the normalised next state or the normalised
  ``s_{t+1} - s_t`` (``state_prediction_mode``).

All statistics live in buffers, so a checkpoint carries them. Delta statistics cannot
come from the core: call :meth:`GPTEnsemblePredictor.fit_normalization` on training
data before step 0 (the trainer does it when the hook exists); if nobody did, the first
training forward fits them from its batch (a warning says so).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from wm_plugins.gpt_state import normalization as nz
from wm_plugins.gpt_state.model import GPTEnsembleCore


class StateNormEncoder(nn.Module):
    """Normalises the raw state with training-split statistics: [B, T, D] -> [B, T, D]."""

    def __init__(self, obs_shape: tuple | list = (14,), state_stats: dict | None = None):
        """Args:
            obs_shape: per-frame state shape (D,); passed by the core.
            state_stats: {"mean": [...], "std": [...]} of the training split; passed by the core.
        """
        super().__init__()
        if len(obs_shape) != 1:
            raise ValueError(f"state_norm needs vector states, got obs_shape {tuple(obs_shape)}")
        self.out_dim = int(obs_shape[0])
        mean, std = nz.stats_tensors(state_stats, self.out_dim, "state_stats")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return nz.normalize(obs.float(), self.mean, self.std)


class GPTEnsemblePredictor(nn.Module):
    """nanoGPT ensemble over (state, action) tokens predicting the next state (see module doc)."""

    def __init__(
        self,
        latent_dim: int = 14,
        action_dim: int = 7,
        n_actions: int = 7,
        history: int = 32,
        n_layer: int = 6,
        n_head: int = 12,
        n_embd: int = 384,
        ensemble_size: int = 2,
        dropout: float = 0.0,
        action_representation: str = "absolute",
        state_prediction_mode: str = "absolute",
        context_noise: float = 0.05,
        context_noise_ramp_steps: int = 50_000,
        state_stats: dict | None = None,
        action_stats: dict | None = None,
    ):
        """Args:
            latent_dim: state dim D (the core passes the encoder's out_dim).
            action_dim: action block width per frame = frameskip * n_actions (core-passed).
            n_actions: continuous action dim per raw step = joints commanded (core-passed).
            history: steps of context (and positional embeddings); 32 by default.
            n_layer: transformer blocks.
            n_head: attention heads.
            n_embd: model width.
            ensemble_size: K members, computed in one batched forward.
            dropout: dropout in attention, residual and embedding paths.
            action_representation: "absolute" (a_t) or "delta" (a_t - q_t) action input.
            state_prediction_mode: "absolute" (s_{t+1}) or "delta" (s_{t+1} - s_t) target.
            context_noise: final std of Gaussian noise on the normalised inputs while training.
            context_noise_ramp_steps: steps over which that std ramps linearly from 0.
            state_stats: training-split state statistics (core-passed).
            action_stats: training-split action statistics (core-passed).
        """
        super().__init__()
        self.action_representation = nz.check_representation("action_representation", action_representation)
        self.state_prediction_mode = nz.check_representation("state_prediction_mode", state_prediction_mode)
        if action_dim % n_actions:
            raise ValueError(f"action_dim ({action_dim}) must be a multiple of n_actions ({n_actions})")
        if n_actions > latent_dim:
            raise ValueError(f"n_actions ({n_actions}) > latent_dim ({latent_dim}): delta actions need q_t in the state")
        self.latent_dim, self.action_dim, self.n_joints = latent_dim, action_dim, n_actions
        self.frameskip = action_dim // n_actions
        self.history = int(history)
        self.ensemble_size = int(ensemble_size)
        self.context_noise = float(context_noise)
        self.context_noise_ramp_steps = int(context_noise_ramp_steps)
        self.current_noise = 0.0  # set by on_train_step
        self.core = GPTEnsembleCore(latent_dim + action_dim, latent_dim, history, n_layer, n_head, n_embd,
                                    ensemble_size, dropout)

        s_mean, s_std = nz.stats_tensors(state_stats, latent_dim, "state_stats")
        a_mean, a_std = nz.stats_tensors(action_stats, n_actions, "action_stats")
        self.register_buffer("state_mean", s_mean)
        self.register_buffer("state_std", s_std)
        self.register_buffer("action_mean", a_mean)
        self.register_buffer("action_std", a_std)
        self.register_buffer("delta_action_mean", torch.zeros(n_actions))
        self.register_buffer("delta_action_std", torch.ones(n_actions))
        self.register_buffer("delta_state_mean", torch.zeros(latent_dim))
        self.register_buffer("delta_state_std", torch.ones(latent_dim))
        # 1 once the delta statistics are fitted (saved in checkpoints, so resume never refits).
        self.register_buffer("delta_stats_fitted", torch.zeros((), dtype=torch.uint8))

    # -- hooks the trainer calls -------------------------------------------------------
    def on_train_step(self, step: int, total_steps: int) -> None:
        """Context-noise ramp: linear from 0 to ``context_noise`` over ``context_noise_ramp_steps``."""
        ramp = max(1, self.context_noise_ramp_steps)
        self.current_noise = self.context_noise * min(1.0, step / ramp)

    @torch.no_grad()
    def fit_normalization(self, states, actions, fit_state_stats: bool = False) -> dict:
        """Fit the delta statistics (and, with ``fit_state_stats``, the absolute ones) from windows.

        ``states [B, L, D]`` raw consecutive states, ``actions [B, L, fs*n_joints]`` (or
        ``[B, L, fs, n_joints]``) the action blocks taken at them: e.g. a few hundred
        training-split windows from the sampler. Returns the statistics dict. The state
        statistics the core passed (``state_stats``) are kept unless ``fit_state_stats``.
        """
        states = torch.as_tensor(states, dtype=torch.float32)
        actions = torch.as_tensor(actions, dtype=torch.float32).flatten(2)
        stats = nz.window_statistics(states, actions, self.n_joints)
        if fit_state_stats:  # only when no core passed state_stats; the encoder must then match
            self.state_mean.copy_(stats["state"][0]); self.state_std.copy_(stats["state"][1])
            self.action_mean.copy_(stats["action"][0]); self.action_std.copy_(stats["action"][1])
        self.delta_action_mean.copy_(stats["delta_action"][0]); self.delta_action_std.copy_(stats["delta_action"][1])
        self.delta_state_mean.copy_(stats["delta_state"][0]); self.delta_state_std.copy_(stats["delta_state"][1])
        self.delta_stats_fitted.fill_(1)
        return self.normalization_stats()

    def fit_normalization_from_batches(self, batches) -> dict:
        """Same, from sampler batches (dicts with raw ``obs [B,L,D]`` and ``action [B,L,fs,A]``)."""
        obs, act = zip(*((torch.as_tensor(b["obs"]), torch.as_tensor(b["action"])) for b in batches))
        return self.fit_normalization(torch.cat(obs), torch.cat(act).flatten(2))

    def normalization_stats(self) -> dict:
        """Everything needed to (de)normalise, as plain lists (normalization_stats.json)."""
        def pair(m, s):
            return {"mean": m.tolist(), "std": s.tolist()}
        return {
            "action_representation": self.action_representation,
            "state_prediction_mode": self.state_prediction_mode,
            "n_joints": self.n_joints,
            "state": pair(self.state_mean, self.state_std),
            "action": pair(self.action_mean, self.action_std),
            "delta_action": pair(self.delta_action_mean, self.delta_action_std),
            "delta_state": pair(self.delta_state_mean, self.delta_state_std),
        }

    # -- representation ----------------------------------------------------------------
    def raw_state(self, z: torch.Tensor) -> torch.Tensor:
        return nz.denormalize(z, self.state_mean, self.state_std)

    def action_input(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Normalised action in the configured representation, [B, T, fs*n_joints]."""
        fs = self.frameskip
        if self.action_representation == "delta":
            a = nz.to_delta_action(action, self.raw_state(z), self.n_joints)
            mean, std = self.delta_action_mean.repeat(fs), self.delta_action_std.repeat(fs)
        else:
            a, mean, std = action, self.action_mean.repeat(fs), self.action_std.repeat(fs)
        return nz.normalize(a, mean, std)

    def make_target(self, z: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Normalised target aligned with ``pred``: [B, L-1, K, D] (broadcast over members)."""
        s = obs.float()
        if self.state_prediction_mode == "delta":
            t = nz.normalize(nz.to_delta_state(s[:, 1:], s[:, :-1]), self.delta_state_mean, self.delta_state_std)
        else:
            t = nz.normalize(s[:, 1:], self.state_mean, self.state_std)
        return t.unsqueeze(2).expand(-1, -1, self.ensemble_size, -1)

    def absolute_next_state(self, pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Raw absolute next state from predictions ``[..., K, D]`` and current latents ``[..., D]``."""
        if self.state_prediction_mode == "delta":
            delta = nz.denormalize(pred, self.delta_state_mean, self.delta_state_std)
            return nz.from_delta_state(delta, self.raw_state(z).unsqueeze(-2))
        return nz.denormalize(pred, self.state_mean, self.state_std)

    def next_latent(self, pred_t: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """Rollout step: ensemble-mean absolute next state, re-normalised as a latent [B, D]."""
        return nz.normalize(self.absolute_next_state(pred_t, z_t).mean(-2), self.state_mean, self.state_std)

    # -- forward ----------------------------------------------------------------------
    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``z [B, T, D]`` normalised states, ``action [B, T, fs*n_joints]`` raw -> ``[B, T, K, D]``."""
        if self.training and not bool(self.delta_stats_fitted) and (
                self.action_representation == "delta" or self.state_prediction_mode == "delta"):
            warnings.warn("gpt_ensemble: delta statistics were not fitted before training; "
                          "fitting them from the first training batch", stacklevel=2)
            self.fit_normalization(self.raw_state(z.detach()), action.detach())
        x = torch.cat([z, self.action_input(z, action)], dim=-1)
        if self.training and self.current_noise > 0:
            # Context noise, drawn per member: robustness to the model's own rollout errors.
            x = x.unsqueeze(0).expand(self.ensemble_size, *x.shape)
            return self.core(x + self.current_noise * torch.randn_like(x), member_inputs=True)
        return self.core(x)

    def predict_last_shared(self, z_shared: torch.Tensor, a_shared: torch.Tensor, z_own: torch.Tensor,
                            a_own: torch.Tensor) -> torch.Tensor:
        """``forward(cat(shared, own))[:, -1]`` -> ``[N, K, D]`` for N rows that share their first P
        steps (``z_shared [1, P, D]``, ``a_shared [1, P, A]``; own steps ``[N, S, ...]``), the shared
        steps computed once (``wm_framework.attention``). Eval mode: no context noise."""
        if self.training:
            raise ValueError("predict_last_shared is for evaluation and planning (eval mode)")
        x_shared = torch.cat([z_shared, self.action_input(z_shared, a_shared)], dim=-1)
        x_own = torch.cat([z_own, self.action_input(z_own, a_own)], dim=-1)
        return self.core.forward_last_shared(x_shared, x_own)


def ensemble_mse(out: dict, batch: dict | None = None) -> torch.Tensor:
    """MSE averaged over batch, time, members and dims; target [B,T,D] or [B,T,K,D]."""
    pred, target = out["pred"], out["target"]
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(-2)
    return (pred - target.expand_as(pred)).pow(2).mean()


def make_ensemble_mse():
    """MSE averaged over members: pred [B,T,K,D] vs target [B,T,D] or [B,T,K,D]."""
    return ensemble_mse
