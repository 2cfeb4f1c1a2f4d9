"""The pixel next-frame world model: a frame-stack CNN encoder and an action-FiLM decoder.

    frames t-k+1..t --conv 32-64-128-256--> linear --> z_t [512]
    (z_t, action_t) --FiLM--> upsampling decoder --> sigmoid --> frame t+1

The encoder stacks the last ``frames`` (k) frames of each time step; at the start of
a window (or an episode) the missing earlier frames repeat the first frame.

Skip connection (``skip = true`` on the encoder, ``skip_frames = k`` on the decoder):
the encoder appends its stacked input frames, flattened, to z; the decoder feeds them,
resized, into every upsampling stage and predicts the next frame as the last frame
plus a correction (its head starts at zero, so an untrained model copies the last
frame). A bottleneck-only decoder has to redraw every background pixel from 512
numbers; with the skip it only has to learn what moves (measured in
docs/results/coinrun_nextframe.md). With ``flow = true`` the decoder also predicts a
coarse motion field and warps the last frame with it first (bilinear sampling), so a
camera scroll is a shift of the old pixels rather than something to redraw. The
predictor is per time step (trivially causal): everything it needs about the past is
already in z_t. Its prediction is a *flattened* frame ``[B, T, C*H*W]`` so that it
fits the core's ``[B, T, D_out]`` predictor contract; ``next_obs`` reshapes it to
``[B, C, H, W]`` for rollouts, and ``make_target`` prepares the true next frame the
same way (grayscale/resize) and flattens it likewise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wm_framework.errors import WMUsageError
from wm_plugins.nextframe.frames import conv_sizes, frame_size, preprocess_frames, warp

N_CONV = 4  # stride-2 stages: 84 -> 42 -> 21 -> 10 -> 5
FLOW_STAGE = 1  # the decoder stage (0-based) whose output predicts the motion field: 21x21 for 84 px,
# coarse enough to be smooth (one vector per 4x4 pixels), fine enough for parallax and sprites.


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # NHWC lets cuDNN pick its fastest convolution kernels (tensor cores under bf16).
    return x.contiguous(memory_format=torch.channels_last)


class FrameStackCNN(nn.Module):
    """Encode each time step from its last k preprocessed frames into one latent vector."""

    def __init__(self, frames=4, grayscale=True, size=84, latent_dim=512, channels=(32, 64, 128, 256), obs_shape=None,
                 skip=False):
        super().__init__()
        if frames < 1:
            raise WMUsageError(f"frame_stack_cnn: frames must be >= 1, got {frames}")
        if len(channels) != N_CONV:
            raise WMUsageError(f"frame_stack_cnn: channels needs {N_CONV} entries, got {list(channels)}")
        raw_c, raw_h, raw_w = tuple(obs_shape) if obs_shape is not None else (3, 84, 84)
        if size is None:  # keep the stored frame size
            size = (raw_h, raw_w)
        self.frames = int(frames)
        self.grayscale = bool(grayscale)
        self.size = frame_size(size)
        self.frame_channels = 1 if grayscale else raw_c
        sizes = conv_sizes(self.size, N_CONV)
        if min(sizes[-1]) < 1:
            raise WMUsageError(f"frame_stack_cnn: size {self.size} is too small for {N_CONV} stride-2 convs (min 16)")
        layers, c_in = [], self.frames * self.frame_channels
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.SiLU(inplace=True)]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in * sizes[-1][0] * sizes[-1][1], latent_dim)
        self.latent_dim = int(latent_dim)
        self.skip = bool(skip)
        self.skip_dim = self.frames * self.frame_channels * self.size[0] * self.size[1] if self.skip else 0
        self.out_dim = self.latent_dim + self.skip_dim

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """Prepared obs [..., C, H, W] -> the frames this model sees and predicts (idempotent)."""
        return preprocess_frames(obs, self.grayscale, self.size)

    def stack(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, c, h, w] -> [B, T, k*c, h, w]: step t holds frames t-k+1..t (clamped at 0)."""
        b, t = frames.shape[:2]
        offsets = torch.arange(self.frames, device=frames.device) - (self.frames - 1)
        idx = (torch.arange(t, device=frames.device).unsqueeze(1) + offsets).clamp(min=0)  # [T, k]
        stacked = frames[:, idx.flatten()]  # [B, T*k, c, h, w]
        return stacked.reshape(b, t, self.frames * frames.shape[2], *frames.shape[3:])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, T, C, H, W] float in [0,1] -> z [B, T, latent_dim]."""
        if obs.dim() != 5:
            raise WMUsageError(f"frame_stack_cnn expects pixels [B,T,C,H,W], got shape {tuple(obs.shape)}")
        b, t = obs.shape[:2]
        stacked = self.stack(self.preprocess(obs))
        h = self.conv(_channels_last(stacked.flatten(0, 1)))
        z = self.proj(h.flatten(1)).view(b, t, self.latent_dim)
        if self.skip:
            z = torch.cat([z, stacked.reshape(b, t, self.skip_dim)], -1)
        return z


class CNNDecoderPredictor(nn.Module):
    """Decode the next frame from z_t, with the action modulating every stage through FiLM."""

    def __init__(
        self,
        latent_dim=512,
        action_dim=15,
        history=4,
        grayscale=True,
        size=84,
        image_channels=3,
        channels=(128, 64, 32, 32),
        action_embed=32,
        skip_frames=0,
        flow=False,
    ):
        super().__init__()
        if len(channels) != N_CONV:
            raise WMUsageError(f"cnn_decoder: channels needs {N_CONV} entries, got {list(channels)}")
        self.history = int(history)
        self.grayscale = bool(grayscale)
        self.size = frame_size(size)
        self.out_channels = 1 if grayscale else int(image_channels)
        self.frame_dim = self.out_channels * self.size[0] * self.size[1]
        self.skip_frames = int(skip_frames)
        self.skip_dim = self.skip_frames * self.frame_dim
        self.code_dim = int(latent_dim) - self.skip_dim
        if self.skip_frames < 0 or self.code_dim < 1:
            raise WMUsageError(
                f"cnn_decoder: skip_frames={skip_frames} needs an encoder with skip = true and the same frames, "
                f"grayscale and size (its z has {latent_dim} values, the skip alone needs {self.skip_dim})")
        skip_c = self.skip_frames * self.out_channels
        self.flow = bool(flow)
        if self.flow and not self.skip_frames:
            raise WMUsageError("cnn_decoder: flow = true warps the last frame, so it needs skip_frames (and an "
                               "encoder with skip = true)")
        # Upsample through the encoder's sizes in reverse so odd sizes (21 for 84) come back exactly.
        self.sizes = list(reversed(conv_sizes(self.size, N_CONV)))  # [(5,5), (10,10), (21,21), (42,42), (84,84)]
        self.stem_channels = 256
        self.stem = nn.Linear(self.code_dim, self.stem_channels * self.sizes[0][0] * self.sizes[0][1])
        self.action = nn.Sequential(nn.Linear(action_dim, action_embed), nn.SiLU())
        self.stages = nn.ModuleList()
        c_in = self.stem_channels
        for c_out in channels:
            self.stages.append(nn.Conv2d(c_in + skip_c, c_out, 3, padding=1))
            c_in = c_out
        self.head = nn.Conv2d(c_in + (self.out_channels if self.flow else 0), self.out_channels, 3, padding=1)
        if self.flow:  # a coarse motion field (pixels, x then y), zero at the start = no motion
            self.flow_head = nn.Conv2d(channels[FLOW_STAGE], 2, 3, padding=1)
            nn.init.zeros_(self.flow_head.weight)
            nn.init.zeros_(self.flow_head.bias)
        if self.skip_frames:  # start as copy-last-frame: the head predicts the change
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # One (scale, shift) pair for the latent and for every decoder stage. Zero-initialised so
        # training starts from the unconditioned decoder and learns how much each action matters.
        self.film_widths = [self.code_dim, *channels]
        self.film = nn.Linear(action_embed, 2 * sum(self.film_widths))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """z [B, T, D], action [B, T, A] -> next frame, flattened: [B, T, C*H*W] in (0, 1)."""
        b, t = z.shape[:2]
        code, frames = z.flatten(0, 1).split([self.code_dim, self.skip_dim], -1)
        if self.skip_frames:
            frames = frames.reshape(b * t, -1, *self.size)  # [N, k*C, H, W], oldest frame first
        film = self.film(self.action(action.flatten(0, 1)))
        scales_shifts = film.split([2 * w for w in self.film_widths], dim=-1)
        gamma, beta = scales_shifts[0].chunk(2, -1)
        h = F.silu(code * (1 + gamma) + beta)
        h = self.stem(h).view(-1, self.stem_channels, *self.sizes[0])
        h = _channels_last(F.silu(h))
        flow = None
        for i, (stage, size, ss) in enumerate(zip(self.stages, self.sizes[1:], scales_shifts[1:])):
            h = F.interpolate(h, size=size, mode="nearest")
            if self.skip_frames:
                h = torch.cat([h, F.adaptive_avg_pool2d(frames, size)], 1)
            h = stage(h)
            gamma, beta = ss.chunk(2, -1)
            h = F.silu(h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
            if self.flow and i == FLOW_STAGE:
                flow = self.flow_head(h)
        if self.skip_frames:  # (warped) last frame + change; values outside [0, 1] are clamped when used as frames
            base = frames[:, -self.out_channels:]
            if flow is not None:
                base = warp(base, F.interpolate(flow, size=self.size, mode="bilinear", align_corners=False))
                h = torch.cat([h, base], 1)
            frame = base + self.head(h)
        else:
            frame = torch.sigmoid(self.head(h))
        return frame.reshape(b, t, self.frame_dim)

    # -- hooks used by wm_framework.model.WorldModel -----------------------------------
    def make_target(self, z: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The next preprocessed frame of each step, flattened like ``forward``'s output: [B, L-1, C*H*W]."""
        target = preprocess_frames(obs[:, 1:], self.grayscale, self.size).flatten(2)
        if target.shape[-1] != self.frame_dim:
            raise WMUsageError(
                f"cnn_decoder: target frames have {target.shape[-1]} values but the decoder makes "
                f"{self.frame_dim}; give encoder and predictor the same grayscale/size/image_channels"
            )
        return target

    def next_obs(self, pred_t: torch.Tensor) -> torch.Tensor:
        """One step's flattened prediction [B, C*H*W] -> frame [B, C, H, W] to feed back."""
        return pred_t.reshape(pred_t.shape[0], self.out_channels, *self.size).clamp(0.0, 1.0)


def make_frame_stack_cnn(frames: int = 4, grayscale: bool = True, size=84, latent_dim: int = 512,
                         channels=(32, 64, 128, 256), obs_shape=None, skip: bool = False) -> FrameStackCNN:
    """Conv encoder over the last k frames (grayscale 84x84 by default) -> latent vector.

    Args:
        frames: frames stacked per time step (k); earlier frames repeat the first one.
        grayscale: convert RGB to luma before encoding (the model then predicts gray frames).
        size: frame size the model works at: int, [H, W], or null to keep the stored size.
        latent_dim: width of the latent vector (the encoder's out_dim).
        channels: conv widths of the four stride-2 stages.
        obs_shape: data parameter (stored frame shape C,H,W), set by the core.
        skip: append the stacked input frames, flattened, to z (out_dim grows by frames*C*H*W) so a
            decoder with ``skip_frames`` can copy and shift pixels instead of redrawing them.
    """
    return FrameStackCNN(frames, grayscale, size, latent_dim, tuple(channels), obs_shape, skip)


def make_cnn_decoder(latent_dim: int = 512, action_dim: int = 15, history: int = 4, grayscale: bool = True,
                     size=84, image_channels: int | None = None, channels=(128, 64, 32, 32),
                     action_embed: int = 32, skip_frames: int = 0, flow: bool = False,
                     obs_shape=None) -> CNNDecoderPredictor:
    """Upsampling decoder predicting the next frame, action-conditioned by FiLM; output [B,T,C*H*W].

    Args:
        latent_dim: data parameter, the encoder's out_dim.
        action_dim: data parameter, width of the float action block (frameskip * n_actions).
        history: frames kept as context in rollouts; must be >= the encoder's `frames`.
        grayscale: predict gray frames; must match the encoder.
        size: predicted frame size (int or [H, W], or null for the stored size); must match the encoder's.
        image_channels: channels of a predicted colour frame (default: the stored frames' channels).
        channels: conv widths of the four upsampling stages.
        action_embed: width of the action embedding that produces the FiLM scales and shifts.
        skip_frames: 0, or the encoder's ``frames`` when it has ``skip = true``: every stage also sees
            those frames and the output is the last frame plus a learned change.
        flow: also predict a coarse motion field and warp the last frame with it before adding the
            change (needs ``skip_frames``): a scrolling camera becomes a shift, not a redraw.
        obs_shape: data parameter (stored frame shape C,H,W), set by the core.
    """
    if size is None:
        if obs_shape is None:
            raise WMUsageError("cnn_decoder: size=null needs the stored frame shape; set size (int or [H, W])")
        size = (int(obs_shape[1]), int(obs_shape[2]))
    if image_channels is None:
        image_channels = int(obs_shape[0]) if obs_shape is not None else 3
    return CNNDecoderPredictor(latent_dim, action_dim, history, grayscale, size, image_channels,
                               tuple(channels), action_embed, skip_frames, flow)
