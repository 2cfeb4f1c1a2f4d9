"""The networks of the latent action model: frame view, inverse-dynamics encoders, decoder, action-to-latent.

    frame_t, frame_t+1 --IDM encoder--> z_e --quantise--> code e_t
    frames t-k+1..t, e_t --decoder--> frame_t+1
    actions t-h+1..t --action-to-latent MLP--> logits over codes

Two inverse-dynamics (IDM) encoders:

* ``CrossAttentionIDM`` (C-ViViT style): one conv stem shared by both frames turns each
  frame into a grid of tokens (+ learned position embedding); the tokens of frame t+1
  attend to the tokens of frame t (cross-attention blocks), so every output token
  describes how its patch changed relative to the whole previous frame; mean-pooled -> z_e.
* ``ConcatIDM`` (plain): the two frames stacked on the channel axis -> strided CNN -> z_e.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LUMA = (0.299, 0.587, 0.114)


def preprocess_frames(obs: torch.Tensor, grayscale: bool = False, size=None) -> torch.Tensor:
    """Float frames [..., C, H, W] in [0,1] -> [..., C', h, w]; idempotent (so rollouts can feed frames back)."""
    lead, (c, h, w) = obs.shape[:-3], obs.shape[-3:]
    x = obs.reshape(-1, c, h, w)
    if grayscale and c == 3:
        x = (x * torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if size is not None and tuple(size) != (h, w):
        shrink = size[0] < h or size[1] < w
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink).clamp(0, 1)
    return x.reshape(*lead, *x.shape[1:])


def conv_stem(in_channels: int, width: int, n_down: int) -> nn.Sequential:
    """``n_down`` stride-2 convs (kernel 4, padding 1: each halves H and W, flooring)."""
    layers, c = [], in_channels
    for i in range(n_down):
        c_out = width if i == n_down - 1 else max(16, width // 2 ** (n_down - 1 - i))
        layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.SiLU()]
        c = c_out
    return nn.Sequential(*layers)


def grid_after(size: tuple[int, int], n_down: int) -> tuple[int, int]:
    h, w = size
    for _ in range(n_down):
        h, w = h // 2, w // 2
    return h, w


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: queries (frame t+1 tokens) attend to keys/values (frame t tokens), then an MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(kv)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class CrossAttentionIDM(nn.Module):
    """(frame_t, frame_t+1) [N, C, H, W] x2 -> z_e [N, code_dim], frame t+1 attending to frame t."""

    def __init__(self, channels: int, size: tuple[int, int], code_dim: int, width: int = 64, n_down: int = 3,
                 heads: int = 4, layers: int = 2):
        super().__init__()
        gh, gw = grid_after(size, n_down)
        if gh < 1 or gw < 1:
            raise ValueError(f"frames of {size} are too small for {n_down} stride-2 convs")
        self.stem = conv_stem(channels, width, n_down)  # shared by both frames
        self.pos = nn.Parameter(torch.randn(1, gh * gw, width) * 0.02)
        self.frame_tag = nn.Parameter(torch.zeros(2, width))  # tells "before" tokens from "after" tokens
        self.blocks = nn.ModuleList(CrossAttentionBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, code_dim)

    def tokens(self, frame: torch.Tensor, tag: int) -> torch.Tensor:
        return self.stem(frame).flatten(2).transpose(1, 2) + self.pos + self.frame_tag[tag]

    def forward(self, frame_t: torch.Tensor, frame_next: torch.Tensor) -> torch.Tensor:
        before = self.tokens(frame_t, 0)
        after = self.tokens(frame_next, 1)
        for block in self.blocks:
            after = block(after, before)
        return self.head(self.norm(after).mean(1))


class ConcatIDM(nn.Module):
    """(frame_t, frame_t+1) stacked on channels -> strided CNN -> z_e [N, code_dim]."""

    def __init__(self, channels: int, size: tuple[int, int], code_dim: int, width: int = 64, n_down: int = 3):
        super().__init__()
        gh, gw = grid_after(size, n_down)
        if gh < 1 or gw < 1:
            raise ValueError(f"frames of {size} are too small for {n_down} stride-2 convs")
        self.cnn = conv_stem(2 * channels, width, n_down)
        self.head = nn.Linear(width * gh * gw, code_dim)

    def forward(self, frame_t: torch.Tensor, frame_next: torch.Tensor) -> torch.Tensor:
        return self.head(self.cnn(torch.cat([frame_t, frame_next], 1)).flatten(1))


class CodeConditionedDecoder(nn.Module):
    """Last k frames (stacked on channels) + code vector -> next frame in (0, 1).

    A small U-Net: strided convs down, the code joins at the bottleneck (broadcast over
    the grid) and FiLM-modulates every up stage; skip connections carry the static
    scene (bricks, walls) so the code only has to explain what moved.

    ``residual`` (default): the output is frame t plus a predicted change (the last
    layer starts at zero, so an untrained decoder copies frame t). Predicting the whole
    frame instead (``residual=False``, a sigmoid) spends the first hundreds of steps
    relearning the identity, 10x worse than copying, while the codebook collapses to
    one code that nothing yet needs (docs/results/latent_actions.md).
    """

    def __init__(self, channels: int, size: tuple[int, int], context: int, code_dim: int, width: int = 64,
                 n_down: int = 3, residual: bool = True):
        super().__init__()
        self.size, self.channels, self.residual = tuple(size), channels, bool(residual)
        widths = [max(16, width // 2 ** (n_down - 1 - i)) for i in range(n_down)]
        self.down = nn.ModuleList()
        c = context * channels
        for w in widths:
            self.down.append(nn.Sequential(nn.Conv2d(c, w, 4, stride=2, padding=1), nn.GroupNorm(1, w), nn.SiLU()))
            c = w
        self.bottleneck = nn.Sequential(nn.Conv2d(c + code_dim, c, 3, padding=1), nn.GroupNorm(1, c), nn.SiLU())
        self.up = nn.ModuleList()
        self.film = nn.ModuleList()
        skip_widths = [context * channels] + widths[:-1]
        for i, skip in enumerate(reversed(skip_widths)):
            out = widths[0] if i == n_down - 1 else skip  # the last stage (full size) keeps the first width
            self.up.append(nn.Sequential(nn.Conv2d(c + skip, out, 3, padding=1), nn.GroupNorm(1, out), nn.SiLU()))
            self.film.append(nn.Linear(code_dim, 2 * out))
            c = out
        self.out = nn.Conv2d(c, channels, 3, padding=1)
        if self.residual:  # start as "copy frame t": the code then only has to explain the change
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, frames: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """frames [N, k*C, H, W], code [N, code_dim] -> frame [N, C, H, W]."""
        if self.down[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            # train.channels_last made the weights NHWC: feed NHWC too (1.35x faster decoder
            # steps on a 2-core CPU than NCHW, which mixed layouts lose again).
            frames = frames.contiguous(memory_format=torch.channels_last)
        skips, h = [frames], frames
        for stage in self.down:
            h = stage(h)
            skips.append(h)
        skips.pop()  # the bottleneck itself is not a skip
        grid = code[:, :, None, None].expand(-1, -1, *h.shape[-2:])
        h = self.bottleneck(torch.cat([h, grid], 1))
        for stage, film, skip in zip(self.up, self.film, reversed(skips)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = stage(torch.cat([h, skip], 1))
            gamma, beta = film(code).chunk(2, -1)
            h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        if not self.residual:
            return torch.sigmoid(self.out(h)).contiguous()
        x = frames[:, -self.channels:] + self.out(h)  # frame t (the last of the stack) + the predicted change
        return (x + (x.clamp(0, 1) - x).detach()).contiguous()  # in [0, 1] forward, identity gradient


class ActionToLatent(nn.Module):
    """Real action blocks of the last ``history`` steps [N, history*A] -> logits over the K codes."""

    def __init__(self, action_dim: int, history: int, num_codes: int, hidden: int = 128):
        super().__init__()
        self.history = int(history)
        self.net = nn.Sequential(nn.Linear(history * action_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, num_codes))

    def forward(self, action_history: torch.Tensor) -> torch.Tensor:
        return self.net(action_history)
