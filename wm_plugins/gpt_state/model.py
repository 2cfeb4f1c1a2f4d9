"""GPT ensemble state world model: nanoGPT blocks with a leading ensemble-member dim.

One token per time step: ``token_t = W_in [state_t ; action_t] + pos_t`` (both
normalised, the action in the configured representation). Pre-LayerNorm causal blocks
(``F.scaled_dot_product_attention(is_causal=True)``) map the tokens to the next-state
prediction at every position, so ``pred[:, t]`` sees steps ``<= t`` only.

The K ensemble members are computed in ONE forward: every weight carries a leading
member dim (``EnsembleLinear.weight [K, in, out]``) and activations are ``[K, B, T, C]``;
matmuls are ``torch.baddbmm`` over the member dim and attention runs on ``[K*B, H, T,
hd]``. So the number of kernels and module calls does not grow with K, and each member
has its own independently initialised weights.

Output: ``pred [B, T, K, D]`` (member dim before the state dim). ``make_target`` returns
the target broadcast to the same shape, so the core's plain ``mse`` averages over the
members; ``ensemble_mse`` (losses.py) does the same and also accepts ``[B, T, D]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wm_framework.attention import shared_prefix_attention



def _no_decay(p: nn.Parameter) -> nn.Parameter:
    # Biases and LayerNorm gains are per-member vectors stored as [K, C]: 2-D tensors that
    # must still be exempt from weight decay (a dim-based rule would decay them).
    p._no_weight_decay = True
    return p


class EnsembleLinear(nn.Module):
    """K independent linear layers applied as one batched matmul: [K, ..., in] -> [K, ..., out]."""

    def __init__(self, k: int, d_in: int, d_out: int, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, d_in, d_out) * init_std)
        self.bias = _no_decay(nn.Parameter(torch.zeros(k, d_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, shape = x.shape[0], x.shape[1:-1]
        y = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(k, -1, x.shape[-1]), self.weight)
        return y.reshape(k, *shape, self.weight.shape[-1])


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with per-member gain and bias: [K, ..., C]."""

    def __init__(self, k: int, dim: int):
        super().__init__()
        self.weight = _no_decay(nn.Parameter(torch.ones(k, dim)))
        self.bias = _no_decay(nn.Parameter(torch.zeros(k, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return F.layer_norm(x, x.shape[-1:]) * self.weight.view(view) + self.bias.view(view)


class CausalSelfAttention(nn.Module):
    def __init__(self, k: int, n_embd: int, n_head: int, dropout: float, proj_std: float):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = EnsembleLinear(k, n_embd, 3 * n_embd)
        self.c_proj = EnsembleLinear(k, n_embd, n_embd, init_std=proj_std)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_kv(x)[0]

    def forward_kv(self, x: torch.Tensor, prefix: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """Also returns this call's keys and values ``[K*B, H, T, d]``; with ``prefix`` (those of
        earlier tokens every row of a member shares, ``[K, H, P, d]``) x's tokens attend to them too."""
        k, b, t, c = x.shape
        q, key, v = self.c_attn(x).split(c, dim=-1)
        # Fold the member dim into the batch: attention is independent per member and sequence.
        q, key, v = (u.reshape(k * b, t, self.n_head, c // self.n_head).transpose(1, 2) for u in (q, key, v))
        if prefix is None:
            y = F.scaled_dot_product_attention(q, key, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True)
        else:
            y = shared_prefix_attention(q, key, v, *prefix)
        y = y.transpose(1, 2).reshape(k, b, t, c)
        return self.resid_dropout(self.c_proj(y)), (key, v)


class MLP(nn.Module):
    def __init__(self, k: int, n_embd: int, dropout: float, proj_std: float):
        super().__init__()
        self.c_fc = EnsembleLinear(k, n_embd, 4 * n_embd)
        self.c_proj = EnsembleLinear(k, 4 * n_embd, n_embd, init_std=proj_std)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, k: int, n_embd: int, n_head: int, dropout: float, proj_std: float):
        super().__init__()
        self.ln_1 = EnsembleLayerNorm(k, n_embd)
        self.attn = CausalSelfAttention(k, n_embd, n_head, dropout, proj_std)
        self.ln_2 = EnsembleLayerNorm(k, n_embd)
        self.mlp = MLP(k, n_embd, dropout, proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_kv(x)[0]

    def forward_kv(self, x: torch.Tensor, prefix: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        attended, kv = self.attn.forward_kv(self.ln_1(x), prefix)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), kv


class GPTEnsembleCore(nn.Module):
    """The transformer alone: normalised inputs [B, T, F] -> predictions [B, T, K, D_out]."""

    def __init__(self, d_in: int, d_out: int, history: int, n_layer: int, n_head: int, n_embd: int,
                 ensemble_size: int, dropout: float = 0.0):
        super().__init__()
        if ensemble_size < 1 or history < 1 or n_layer < 1:
            raise ValueError("ensemble_size, history and n_layer must be >= 1")
        k = ensemble_size
        self.ensemble_size, self.history = k, history
        proj_std = 0.02 / math.sqrt(2 * n_layer)  # GPT-2: residual projections scaled by depth
        self.wte = EnsembleLinear(k, d_in, n_embd)
        self.wpe = nn.Parameter(torch.randn(k, history, n_embd) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(k, n_embd, n_head, dropout, proj_std) for _ in range(n_layer))
        self.ln_f = EnsembleLayerNorm(k, n_embd)
        self.head = EnsembleLinear(k, n_embd, d_out)

    def forward(self, x: torch.Tensor, member_inputs: bool = False) -> torch.Tensor:
        """``x [B, T, F]`` shared by all members, or ``[K, B, T, F]`` when ``member_inputs``."""
        if not member_inputs:
            x = x.unsqueeze(0).expand(self.ensemble_size, *x.shape)
        t = x.shape[2]
        if t > self.history:
            raise ValueError(f"sequence of {t} steps is longer than the model's history ({self.history})")
        h = self.drop(self.wte(x) + self.wpe[:, None, :t])
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h)).permute(1, 2, 0, 3)  # [K,B,T,D] -> [B,T,K,D]

    def forward_last_shared(self, x_shared: torch.Tensor, x_own: torch.Tensor) -> torch.Tensor:
        """``forward(cat(shared, own))[:, -1]`` -> ``[N, K, D_out]`` for N rows sharing their first P
        steps (``x_shared [1, P, F]``, ``x_own [N, S, F]``); the shared steps run once per member."""
        p, s = x_shared.shape[1], x_own.shape[1]
        if p + s > self.history:
            raise ValueError(f"sequence of {p + s} steps is longer than the model's history ({self.history})")
        k = self.ensemble_size
        h_shared = self.wte(x_shared.unsqueeze(0).expand(k, *x_shared.shape)) + self.wpe[:, None, :p]
        h_own = self.wte(x_own.unsqueeze(0).expand(k, *x_own.shape)) + self.wpe[:, None, p:p + s]
        for block in self.blocks:
            h_shared, kv = block.forward_kv(h_shared)
            h_own, _ = block.forward_kv(h_own, prefix=kv)
        return self.head(self.ln_f(h_own[:, :, -1])).transpose(0, 1)  # [K,N,D] -> [N,K,D]
