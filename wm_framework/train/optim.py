"""AdamW with weight-decay groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only >=2-D parameters (matrices, convs, embeddings); never biases or norms.

    A parameter stacked over ensemble members is >=2-D even when it is a bias; a model
    marks such tensors with ``p._no_weight_decay = True``.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and not getattr(p, "_no_weight_decay", False) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), device=None):
    """AdamW, fused on CUDA (one kernel for all parameters) and plain elsewhere."""
    fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), fused=fused)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """LambdaLR factor: linear warm-up to 1, then cosine down to ``min_ratio`` at the last step."""
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps))

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer, total_steps: int, warmup_fraction: float, lr: float, min_lr: float):
    warmup = int(round(warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup, min_lr / lr if lr else 0.0))
