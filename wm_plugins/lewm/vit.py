"""A Vision Transformer encoder trained from scratch (LeWM's ViT-Tiny), top to bottom.

obs ``[B, T, C, H, W]`` in [0, 1]
  -> (optional crop, resize to ``image_size`` by bilinear / area / max filter, gray -> RGB,
     ImageNet normalisation)
  -> patch embedding (a conv with stride = patch, or a stem of 3x3 stride-2 convs)
     + CLS token + learned positions
  -> ``depth`` pre-norm transformer blocks -> final LayerNorm
  -> CLS token (or the mean of the patch tokens, or a linear map of the whole grid)
                                                        = ``features(obs)``
  -> BatchNorm projector                                = ``forward(obs)``, ``[B, T, D]``

At the "tiny" preset (224 px, patch 14, width 192, depth 12, 3 heads, MLP 768) the
backbone has exactly 5,501,376 parameters and the projector 792,768 (REFERENCE §1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wm_plugins.lewm.projector import Projector, init_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
RESIZE_FILTERS = ("bilinear", "area", "max")
POOLINGS = ("cls", "mean", "flatten")
STEMS = ("patch", "conv")
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_frames(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, *size]``.

    * ``bilinear``: antialiased bilinear (smooth; a 2x4-px Breakout ball fades to a faint
      smudge at 64 px);
    * ``area``: the average over each output pixel's footprint;
    * ``max``: the maximum over it, so a small bright object on a dark background keeps
      its full intensity at any shrink factor (growing falls back to nearest).
    """
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    grow = size[0] > x.shape[-2] or size[1] > x.shape[-1]
    if mode == "area" and not grow:
        return F.adaptive_avg_pool2d(x, size)
    if mode == "max" and not grow:
        return F.adaptive_max_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens (no mask: images are not causal)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, length, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def conv_stem(patch_size: int, width: int) -> nn.Sequential:
    """Early convolutions (Xiao et al. 2021) in place of the patchify conv.

    log2(patch) 3x3 stride-2 convs (channels doubling up to width / 2, each followed
    by BatchNorm and ReLU) then a 1x1 conv to width: the same token grid as a
    ``patch``-stride conv, but the overlapping 3x3 windows see a small object whole
    wherever it falls, where a patchify conv splits a 1-2 px ball between tokens and
    weighs it linearly against 63 background pixels.
    """
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"stem 'conv' needs a power-of-two patch_size >= 2, got {patch_size}")
    layers: list[nn.Module] = []
    stages = patch_size.bit_length() - 1
    channels_in = 3
    for i in range(stages):
        channels_out = max(8, width // 2 ** (stages - i))
        layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]
        channels_in = channels_out
    layers.append(nn.Conv2d(channels_in, width, 1))
    return nn.Sequential(*layers)


class ViT(nn.Module):
    """Images ``[N, 3, H, W]`` (already resized and normalised) -> tokens ``[N, 1 + P, width]``."""

    def __init__(self, image_size: tuple[int, int], patch_size: int, width: int, depth: int, heads: int, mlp_dim: int,
                 stem: str = "patch"):
        super().__init__()
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"image_size {h}x{w} is not divisible by patch_size {patch_size}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.image_size = (h, w)
        self.num_patches = (h // patch_size) * (w // patch_size)
        self.patch_embed = (nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size) if stem == "patch"
                            else conv_stem(patch_size, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # [N, P, width]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ViTEncoder(nn.Module):
    """The world-model encoder: pixels ``[B, T, C, H, W]`` in [0, 1] -> latents ``[B, T, D]``."""

    def __init__(self, image_size, patch_size: int, width: int, depth: int, heads: int, mlp_dim: int,
                 pooling: str = "cls", normalize: bool = True, projector: bool = True,
                 projector_hidden: int = 2048, crop: tuple[int, int, int, int] | None = None,
                 resize: str = "bilinear", stem: str = "patch"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if resize not in RESIZE_FILTERS:
            raise ValueError(f"resize must be one of {RESIZE_FILTERS}, got {resize!r}")
        self.crop = tuple(int(c) for c in crop) if crop is not None else None
        self.resize = resize
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        self.backbone = ViT(size, patch_size, width, depth, heads, mlp_dim, stem=stem)
        self.projector = Projector(width, projector_hidden) if projector else nn.Identity()
        self.pooling = pooling
        self.poolings = POOLINGS  # what features(obs, pooling=...) accepts
        # "flatten": a linear map of the whole patch-token grid, so where a token sits
        # decides which weights it meets. CLS and mean pooling are nearly translation-
        # invariant (measured: ridge R^2 for Breakout's paddle x is 0.99 from the patch
        # grid and ~0 from the CLS token, trained or not; docs/results/lewm_breakout.md).
        self.flatten = nn.Linear(self.backbone.num_patches * width, width) if pooling == "flatten" else None
        self.normalize = normalize
        self.out_dim = width
        # Buffers, not parameters: they move with .to(device) but are not trained.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _images(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` -> ``[B*T, 3, h, w]`` ready for the backbone."""
        if obs.dim() != 5:
            raise ValueError(f"vit expects pixels [B, T, C, H, W], got shape {tuple(obs.shape)}")
        x = obs.flatten(0, 1).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale -> the three channels the ViT expects
        elif x.shape[1] != 3:
            raise ValueError(f"vit expects 1 or 3 channels, got {x.shape[1]}")
        if self.crop is not None:
            top, bottom, left, right = self.crop
            if not (0 <= top < bottom <= x.shape[-2] and 0 <= left < right <= x.shape[-1]):
                raise ValueError(f"crop {self.crop} does not fit frames of {tuple(x.shape[-2:])}")
            x = x[..., top:bottom, left:right]
        if tuple(x.shape[-2:]) != self.backbone.image_size:
            # Resizing here (not in the store) lets one store feed encoders of any size.
            x = resize_frames(x, self.backbone.image_size, self.resize)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x

    def features(self, obs: torch.Tensor, pooling: str | None = None) -> torch.Tensor:
        """Pre-projector embedding ``[B, T, width]``: CLS token or patch-token mean (for probes).

        ``pooling`` overrides the configured one for this call (the probe study's patch-mean
        baseline asks for "mean"; :attr:`poolings` lists what may be asked)."""
        pooling = pooling or self.pooling
        if pooling not in self.poolings:
            raise ValueError(f"pooling must be one of {self.poolings}, got {pooling!r}")
        b, t = obs.shape[:2]
        tokens = self.backbone(self._images(obs))
        if pooling == "cls":
            pooled = tokens[:, 0]
        elif pooling == "flatten" and self.flatten is not None:
            pooled = self.flatten(tokens[:, 1:].flatten(1))
        else:
            pooled = tokens[:, 1:].mean(dim=1)
        return pooled.view(b, t, -1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(obs))
