"""Causal attention over a prefix every row shares, computed once: the planning speed-up.

A planner scores N candidate action sequences from one context. In a causal
transformer predictor, the context tokens whose actions are past actions are the same
for every candidate, and so are their keys and values at every layer: they depend on
earlier tokens only. A predictor that offers the ``predict_last_shared`` capability
(``wm_framework.contracts``) runs those tokens once at batch 1 and the candidates'
own tokens at batch N, attending to the shared keys and values through
:func:`shared_prefix_attention`. The result equals the full causal pass up to
floating-point rounding (tests check 1e-5); what it saves is the N-fold repetition of
the prefix.

Why not a key/value cache across horizon steps: the predictors here have one learned
position per history slot, so once the window slides every token changes position, and
its keys with it. Only the shared prefix is exact to reuse.
"""

from __future__ import annotations

import torch


def shared_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor,
                            prefix_v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of ``q`` over a shared prefix and, causally, over its own tokens.

    ``q, k, v``: ``[G*N, H, S, d]``, the S own tokens of N rows in each of G groups
    (G = ensemble members, or 1), group-major. ``prefix_k, prefix_v``: ``[G, H, P, d]``,
    the keys and values of the P tokens before them, the same for the N rows of a group.
    Own token j sees every prefix token and own tokens ``<= j``; returns ``[G*N, H, S, d]``,
    what ``scaled_dot_product_attention(is_causal=True)`` over the concatenated P+S tokens
    gives for the last S. The prefix scores are one matmul over all N*S queries, so the
    prefix keys are never copied N times.
    """
    gn, heads, s, d = q.shape
    g, p = prefix_k.shape[0], prefix_k.shape[2]
    if gn % g or prefix_k.shape[1] != heads or prefix_k.shape[3] != d:
        raise ValueError(f"queries {tuple(q.shape)} do not fit prefix keys {tuple(prefix_k.shape)}")
    n = gn // g
    scale = d ** -0.5

    def by_group(x: torch.Tensor, last: int) -> torch.Tensor:  # [G*N, H, S, last] -> [G, H, N*S, last]
        return x.reshape(g, n, heads, s, last).transpose(1, 2).reshape(g, heads, n * s, last)

    def by_row(x: torch.Tensor, last: int) -> torch.Tensor:  # the inverse
        return x.reshape(g, heads, n, s, last).transpose(1, 2).reshape(gn, heads, s, last)

    scores_prefix = by_row(torch.matmul(by_group(q, d), prefix_k.transpose(-1, -2)), p) * scale
    scores_own = torch.matmul(q, k.transpose(-1, -2)) * scale
    future = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
    scores_own = scores_own.masked_fill(future, float("-inf"))
    weights = torch.cat([scores_prefix, scores_own], -1).softmax(-1)
    w_prefix, w_own = weights.split([p, s], -1)
    out_prefix = by_row(torch.matmul(by_group(w_prefix, p), prefix_v), d)
    return out_prefix + torch.matmul(w_own, v)
