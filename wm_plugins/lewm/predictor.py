"""LeWM's action-conditioned causal transformer predictor, top to bottom.

latents ``z [B, T, D]`` + action blocks ``a [B, T, A]``
  -> z + learned position (one per history slot)
  -> ``depth`` causal blocks, each conditioned on its own time step's action by AdaLN-Zero
  -> final LayerNorm -> BatchNorm projector -> ``[B, T, D]``: the prediction of z_{t+1}

Output t depends only on z_<=t and a_<=t (causal attention; in eval mode). In training
mode the projector's BatchNorm shares statistics across the batch, as in LeWM.

At the "lewm" preset with D=192 and 10-wide action blocks (2-D actions, frameskip 5)
the parameter counts are exactly REFERENCE §1's: action encoder 156,206, transformer
10,791,360, projector 792,768.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wm_framework.attention import shared_prefix_attention
from wm_plugins.lewm.projector import Projector, init_weights

class ActionEncoder(nn.Module):
    """One action block per frame -> a conditioning vector ``[B, T, D]``.

    ``Linear(A, 10)`` squeezes the frameskip x action block (LeWM does this with a
    kernel-1 Conv1d, which is the same per-step linear map), then an MLP
    ``Linear(10, 4D) -> SiLU -> Linear(4D, D)``.
    """

    def __init__(self, action_dim: int, dim: int, smoothed_dim: int = 10, hidden: int | None = None):
        super().__init__()
        hidden = 4 * dim if hidden is None else hidden
        self.squeeze = nn.Linear(action_dim, smoothed_dim)
        self.mlp = nn.Sequential(nn.Linear(smoothed_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        # NaN marks an undefined action (padding / first step): it must act like "no action".
        return self.mlp(self.squeeze(torch.nan_to_num(action, nan=0.0)))


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with a wide inner space (heads x head_dim, then back to D)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        inner = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_kv(x)[0]

    def forward_kv(self, x: torch.Tensor, prefix: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """Also returns this call's keys and values ``[B, H, T, d]``. With ``prefix`` (keys and
        values ``[1, H, P, d]`` of earlier tokens every row shares) x's tokens attend to them too."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if prefix is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        else:
            y = shared_prefix_attention(q, k, v, *prefix)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, -1))), (k, v)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """Pre-norm causal block whose norms and residual gates are set by the action (AdaLN-Zero).

    ``SiLU -> Linear(D, 6D)`` maps the step's action embedding to shift/scale/gate for the
    attention and the MLP branch. That linear starts at zero, so every gate is 0 and the
    block starts as the identity: the action can only gain influence through training.

    Two normalisation styles with the same parameter count:

    * ``"released"`` (default, the function of the released LeWM code): each branch
      normalises twice: a non-affine LayerNorm (eps 1e-6) is modulated by the action,
      then the branch module's own affine LayerNorm (eps 1e-5) runs before attention /
      the MLP, so the learned scale and shift act *after* the modulation.
    * ``"single"``: one affine LayerNorm (eps 1e-6), then the modulation (DiT style).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float, norm_style: str = "released"):
        super().__init__()
        if norm_style not in ("released", "single"):
            raise ValueError(f"norm_style must be 'released' or 'single', got {norm_style!r}")
        released = norm_style == "released"
        self.ln1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=not released)
        self.attn = CausalSelfAttention(dim, heads, head_dim, dropout)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=not released)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )
        # The released code's Attention / FeedForward open with their own nn.LayerNorm(dim).
        self.attn_norm = nn.LayerNorm(dim) if released else nn.Identity()
        self.mlp_norm = nn.LayerNorm(dim) if released else nn.Identity()
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def zero_init_adaln(self) -> None:
        nn.init.zeros_(self.adaln[1].weight)
        nn.init.zeros_(self.adaln[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.forward_kv(x, cond)[0]

    def forward_kv(self, x: torch.Tensor, cond: torch.Tensor, prefix: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """The block, also returning its attention's keys and values (see ``CausalSelfAttention``)."""
        # cond is per time step [B, T, D], so frame t is modulated by its own action only.
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaln(cond).chunk(6, dim=-1)
        attended, kv = self.attn.forward_kv(self.attn_norm(modulate(self.ln1(x), shift_a, scale_a)), prefix)
        x = x + gate_a * attended
        return x + gate_m * self.mlp(self.mlp_norm(modulate(self.ln2(x), shift_m, scale_m))), kv


class ARTransformerPredictor(nn.Module):
    """(z [B, T, D], a [B, T, A]) -> next-latent predictions [B, T, D], causal in T.

    ``history`` is the number of positional slots: T may be anything from 1 to
    ``history`` (rollouts and planners feed growing contexts); T > history raises,
    because there is no learned position for it. Callers keep the last ``history``
    steps (``WorldModel.rollout`` does).
    """

    def __init__(self, latent_dim: int, action_dim: int, history: int, depth: int, heads: int, head_dim: int,
                 mlp_dim: int, dropout: float, action_smoothed_dim: int = 10, projector: bool = True,
                 projector_hidden: int = 2048, norm_style: str = "released"):
        super().__init__()
        self.history = history
        self.latent_dim = latent_dim
        self.action_dim = action_dim
        self.action_encoder = ActionEncoder(action_dim, latent_dim, action_smoothed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, history, latent_dim))
        self.blocks = nn.ModuleList(AdaLNBlock(latent_dim, heads, head_dim, mlp_dim, dropout, norm_style)
                                    for _ in range(depth))
        # The released final norm is a default nn.LayerNorm (eps 1e-5).
        self.norm = nn.LayerNorm(latent_dim, eps=1e-5 if norm_style == "released" else 1e-6)
        self.projector = Projector(latent_dim, projector_hidden) if projector else nn.Identity()
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for block in self.blocks:
            block.zero_init_adaln()

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if z.dim() != 3 or action.dim() != 3 or z.shape[:2] != action.shape[:2]:
            raise ValueError(f"predictor expects z [B,T,D] and action [B,T,A] with equal B,T; "
                             f"got {tuple(z.shape)} and {tuple(action.shape)}")
        t = z.shape[1]
        if t > self.history:
            raise ValueError(f"predictor got {t} steps but has only history={self.history} positions; "
                             f"pass the last {self.history} steps")
        if action.shape[-1] != self.action_dim:
            raise ValueError(f"predictor built for action blocks of width {self.action_dim}, got {action.shape[-1]}")
        cond = self.action_encoder(action.to(z.dtype))
        x = z + self.pos_embed[:, :t]
        for block in self.blocks:
            x = block(x, cond)
        return self.projector(self.norm(x))

    def predict_last_shared(self, z_shared: torch.Tensor, a_shared: torch.Tensor, z_own: torch.Tensor,
                            a_own: torch.Tensor) -> torch.Tensor:
        """``forward(cat(shared, own))[:, -1]`` for N rows that share their first P steps
        (``z_shared [1, P, D]``, ``a_shared [1, P, A]``; own steps ``[N, S, ...]``), with the
        shared steps computed once (``wm_framework.attention``). Eval mode only: in training
        the projector's BatchNorm mixes rows."""
        p, s = z_shared.shape[1], z_own.shape[1]
        if self.training or p + s > self.history or z_shared.shape[0] != 1:
            raise ValueError(f"predict_last_shared: eval mode, one shared row and at most {self.history} steps "
                             f"(got training={self.training}, {p}+{s} steps, {z_shared.shape[0]} shared rows)")
        x_shared = z_shared + self.pos_embed[:, :p]
        x_own = z_own + self.pos_embed[:, p:p + s]
        cond_shared = self.action_encoder(a_shared.to(z_shared.dtype))
        cond_own = self.action_encoder(a_own.to(z_own.dtype))
        for block in self.blocks:
            x_shared, kv = block.forward_kv(x_shared, cond_shared)
            x_own, _ = block.forward_kv(x_own, cond_own, prefix=kv)
        return self.projector(self.norm(x_own[:, -1]))
