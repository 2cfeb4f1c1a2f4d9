"""The latent action model in the core's encoder -> predictor composition.

How it maps onto ``WorldModel`` (see docs/latent_actions.md):

* encoder ``frames``: no parameters; each frame, preprocessed (optionally gray /
  resized), flattened: ``z_t = frame_t`` (out_dim = C*H*W). Causal and honest: probes
  on it are raw-pixel baselines.
* predictor ``latent_action_vqvae``: gets frames ``z[:, :T]`` and real action blocks.
  At every position t whose next frame is in its input (t < T-1) the latent action is
  *inferred*: IDM(frame_t, frame_t+1) -> quantised code. At the last position the
  next frame is unknown, so the code is *predicted* from the real actions by the
  action-to-latent model (argmax). Either way the decoder turns the last k frames and
  the code into frame t+1. Training therefore learns the VQ-VAE on positions 0..T-2
  and measures "play the model with real actions" on position T-1 -- which is
  exactly what open-loop rollouts (``WorldModel.rollout``) do at every step.

The predictor's output per position is the predicted frame (flattened, so
``next_obs`` and the core's image metrics work) followed by a few per-position
scalars the losses need (quantisation errors carrying gradients, the code, the
action-to-latent cross-entropy ...): the core hands losses only ``out["pred"]``,
so these travel with it. ``split_prediction`` is the one place that knows the layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wm_framework.errors import WMUsageError
from wm_plugins.latent_actions.networks import (ActionToLatent, CodeConditionedDecoder, ConcatIDM, CrossAttentionIDM,
                                                preprocess_frames)
from wm_plugins.latent_actions.quantizer import VectorQuantizer

# Per-position scalars appended after the flattened frame, in this order.
EXTRAS = ("codebook_err", "commit_err", "a2l_ce", "a2l_correct", "code", "from_action", "num_codes")


def split_prediction(pred: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``pred`` [..., D + len(EXTRAS)] -> (frames [..., D], {name: [...]})."""
    n = len(EXTRAS)
    extras = pred[..., -n:]
    return pred[..., :-n], {name: extras[..., i] for i, name in enumerate(EXTRAS)}


def _size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


class FramesEncoder(nn.Module):
    """Identity view of the frames: prepared obs [B,T,C,H,W] -> [B,T,C'*h*w] (gray/resized if asked)."""

    def __init__(self, grayscale: bool = False, size=None, obs_shape=(1, 64, 64)):
        super().__init__()
        c, h, w = (int(v) for v in obs_shape)
        self.grayscale = bool(grayscale)
        self.size = _size(size) or (h, w)
        self.channels = 1 if (grayscale and c == 3) else c
        self.out_dim = self.channels * self.size[0] * self.size[1]

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """Prepared obs [..., C, H, W] -> the frames the model sees and predicts (idempotent)."""
        return preprocess_frames(obs, self.grayscale, self.size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.preprocess(obs).flatten(2)


class LatentActionVQVAE(nn.Module):
    """VQ-VAE over frame transitions + code-conditioned decoder + action-to-latent classifier."""

    def __init__(self, frame_shape: tuple[int, int, int], action_dim: int, idm: str = "cross_attention",
                 codebook_size: int = 256, code_dim: int = 32, ema: bool = True, decay: float = 0.99,
                 dead_code_restart: bool = True, dead_after: int = 50, context: int = 4, width: int = 64,
                 n_down: int = 3, heads: int = 4, attn_layers: int = 2, action_history: int = 2,
                 a2l_hidden: int = 128, data_init: bool = True, residual: bool = True, vq_warmup: int = 0,
                 standardize: bool = True):
        super().__init__()
        c, h, w = frame_shape
        self.frame_shape, self.frame_dim = (c, h, w), c * h * w
        self.context, self.action_history = int(context), int(action_history)
        self.history = self.context  # rollouts keep this many frames
        if idm == "cross_attention":
            self.idm = CrossAttentionIDM(c, (h, w), code_dim, width, n_down, heads, attn_layers)
        elif idm == "concat":
            self.idm = ConcatIDM(c, (h, w), code_dim, width, n_down)
        else:
            raise WMUsageError(f"latent_action_vqvae: idm must be 'cross_attention' or 'concat', got {idm!r}")
        self.quantizer = VectorQuantizer(codebook_size, code_dim, ema=ema, decay=decay,
                                         dead_code_restart=dead_code_restart, dead_after=dead_after,
                                         data_init=data_init, warmup_steps=vq_warmup)
        # Standardise each z_e dimension over the batch (no affine): the IDM's mean-pooled output
        # otherwise varies by ~0.2 % of its norm between transitions, all of them land on the
        # same few codes, and the decoder learns to ignore them (docs/results/latent_actions.md).
        self.standardize = nn.BatchNorm1d(code_dim, affine=False) if standardize else nn.Identity()
        self.decoder = CodeConditionedDecoder(c, (h, w), self.context, code_dim, width, n_down, residual)
        self.action_to_latent = ActionToLatent(action_dim, self.action_history, codebook_size, a2l_hidden)

    # ------------------------------------------------------------------ pieces
    def _frames(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.frame_dim:
            raise WMUsageError(f"latent_action_vqvae: inputs have {z.shape[-1]} values per step but frames of "
                               f"{self.frame_shape} have {self.frame_dim}; pair it with the `frames` encoder "
                               "and give both the same size")
        return z.reshape(*z.shape[:2], *self.frame_shape)

    @staticmethod
    def _trailing(x: torch.Tensor, k: int) -> torch.Tensor:
        """x [B,T,...] -> [B,T,k,...]: the last k steps at each position (the first step repeats before the start)."""
        pad = x[:, :1].expand(-1, k - 1, *x.shape[2:])
        padded = torch.cat([pad, x], 1)
        return torch.stack([padded[:, i:i + x.shape[1]] for i in range(k)], 2)

    def action_logits(self, action: torch.Tensor) -> torch.Tensor:
        """Action blocks [B,T,A] -> code logits [B,T,K] from the last ``action_history`` blocks (zeros before the start)."""
        b, t, a = action.shape
        padded = torch.cat([action.new_zeros(b, self.action_history - 1, a), action.float()], 1)
        hist = torch.stack([padded[:, i:i + t] for i in range(self.action_history)], 2)
        return self.action_to_latent(hist.flatten(2))

    def infer(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [B,T,C,H,W] -> the IDM's unquantised latent actions z_e [B,T-1,E] (position t: t -> t+1)."""
        b, t = frames.shape[:2]
        z_e = self.idm(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1))
        return self.standardize(z_e).view(b, t - 1, -1)

    def decode(self, frames: torch.Tensor, code_vec: torch.Tensor) -> torch.Tensor:
        """Frames [B,T,C,H,W] + one code vector per position [B,T,E] -> predicted frame t+1 [B,T,C,H,W]."""
        b, t = frames.shape[:2]
        stack = self._trailing(frames, self.context).flatten(2, 3)  # [B,T,k*C,H,W]
        return self.decoder(stack.flatten(0, 1), code_vec.flatten(0, 1)).float().view(b, t, *self.frame_shape)

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """z (flattened frames) [B,T,D], action [B,T,A] -> [B,T,D+len(EXTRAS)] (see ``split_prediction``)."""
        frames = self._frames(z).float()
        b, t = frames.shape[:2]
        logits = self.action_logits(action)  # [B,T,K]
        zeros = frames.new_zeros(b, t)
        codes = torch.zeros(b, t, dtype=torch.long, device=frames.device)
        codebook_err, commit_err, a2l_ce, a2l_correct = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
        from_action = zeros.clone()
        from_action[:, -1] = 1.0
        # Position T-1: the next frame is not in the input -> code from the real actions.
        act_code = logits[:, -1].argmax(-1)
        code_vec = [self.quantizer.embed(act_code).detach().float().unsqueeze(1)]
        codes[:, -1] = act_code
        if t > 1:  # positions 0..T-2: code inferred from (frame_t, frame_t+1)
            z_e = self.infer(frames).flatten(0, 1)
            q = self.quantizer(z_e)
            idm_codes = q["codes"].view(b, t - 1)
            codes[:, :-1] = idm_codes
            codebook_err[:, :-1] = q["codebook_err"].view(b, t - 1)
            commit_err[:, :-1] = q["commit_err"].view(b, t - 1)
            inferred_logits = logits[:, :-1].float()
            a2l_ce[:, :-1] = F.cross_entropy(inferred_logits.flatten(0, 1), q["codes"], reduction="none").view(b, t - 1)
            a2l_correct[:, :-1] = (inferred_logits.argmax(-1) == idm_codes).float()
            code_vec.insert(0, q["z_q"].view(b, t - 1, -1))
        code_vec = torch.cat(code_vec, 1)  # [B,T,E]
        pred = self.decode(frames, code_vec).view(b, t, self.frame_dim)
        num_codes = torch.full_like(zeros, float(self.quantizer.num_codes))
        extras = [codebook_err, commit_err, a2l_ce, a2l_correct, codes.float(), from_action, num_codes]
        return torch.cat([pred, torch.stack(extras, -1)], -1)

    # ------------------------------------------------------------------ hooks used by WorldModel
    def make_target(self, z: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The true next frames, flattened: [B, L-1, D] (the encoder's output, one step ahead)."""
        return z[:, 1:].float()

    def next_obs(self, pred_t: torch.Tensor) -> torch.Tensor:
        """One position's output [B, D+extras] (or a flattened frame [B, D]) -> frame [B, C, H, W]."""
        return pred_t[..., :self.frame_dim].reshape(pred_t.shape[0], *self.frame_shape)


def make_frames_encoder(grayscale: bool = False, size=None, obs_shape=(1, 64, 64)) -> FramesEncoder:
    """Parameter-free encoder: each frame (optionally gray / resized), flattened; out_dim = C*H*W.

    Args:
        grayscale: convert RGB frames to luma (1 channel).
        size: resize frames to this (int or [H, W]); null keeps the stored size.
        obs_shape: data parameter (stored frame shape C,H,W), set by the core.
    """
    return FramesEncoder(grayscale, size, tuple(obs_shape))


def make_latent_action_vqvae(idm: str = "cross_attention", codebook_size: int = 256, code_dim: int = 32,
                             ema: bool = True, decay: float = 0.99, dead_code_restart: bool = True,
                             dead_after: int = 50, context: int = 4, width: int = 64, n_down: int = 3,
                             heads: int = 4, attn_layers: int = 2, action_history: int = 2, a2l_hidden: int = 128,
                             data_init: bool = True, residual: bool = True, vq_warmup: int = 0,
                             standardize: bool = True, size=None, latent_dim: int | None = None, action_dim: int = 4,
                             obs_shape=(1, 64, 64)) -> LatentActionVQVAE:
    """Latent action VQ-VAE: IDM(frame_t, frame_t+1) -> code; decoder(last k frames, code) -> frame_t+1.

    Pair with the `frames` encoder. Output per step: the predicted frame (flattened) plus
    per-step quantities for the `vq_recon`, `action_to_latent_ce` and `latent_action_metrics` losses.

    Args:
        idm: inverse-dynamics encoder: "cross_attention" (conv stems + frame t+1 attending
            to frame t, C-ViViT style) or "concat" (channel-stacked frames -> CNN).
        codebook_size: number of discrete latent actions K.
        code_dim: width of a code vector.
        ema: learn the codebook by EMA (True) or by the codebook loss gradient (False).
        decay: EMA decay.
        dead_code_restart: re-seed codes unused for `dead_after` training steps from encoder outputs.
        dead_after: training steps without use after which a code is re-seeded.
        context: frames the decoder sees (k, the last k up to frame t).
        width: channel width of the conv stems / token width.
        n_down: stride-2 convs in stems and decoder (64 px -> 8x8 tokens with 3).
        heads: attention heads (cross_attention).
        attn_layers: cross-attention blocks (cross_attention).
        action_history: action blocks (t-h+1..t) the action-to-latent classifier sees.
        a2l_hidden: hidden width of the action-to-latent MLP.
        data_init: start the codebook from the first training batch's encoder outputs.
        residual: the decoder predicts the change from frame t (starting as a copy of it)
            rather than the whole frame.
        standardize: standardise each IDM output dimension over the batch (batch norm
            without affine) before quantisation, so transitions cannot all map to one point.
        vq_warmup: training steps with the IDM output passed to the decoder unquantised
            before the codebook is seeded from it and quantisation starts.
        size: frame size [H, W] when the `frames` encoder resizes (null: the stored size).
        latent_dim: data parameter, the encoder's out_dim (C*H*W).
        action_dim: data parameter, width of the float action block.
        obs_shape: data parameter (stored frame shape C,H,W).
    """
    c, h, w = (int(v) for v in obs_shape)
    hw = _size(size) or (h, w)
    latent_dim = latent_dim or c * hw[0] * hw[1]
    if latent_dim % (hw[0] * hw[1]):
        raise WMUsageError(f"latent_action_vqvae: encoder out_dim {latent_dim} is not a whole number of "
                           f"{hw[0]}x{hw[1]} frames; set `size` to the encoder's size")
    if context < 1 or action_history < 1:
        raise WMUsageError("latent_action_vqvae: context and action_history must be >= 1")
    return LatentActionVQVAE((latent_dim // (hw[0] * hw[1]), *hw), int(action_dim), idm, int(codebook_size),
                             int(code_dim), bool(ema), float(decay), bool(dead_code_restart), int(dead_after),
                             int(context), int(width), int(n_down), int(heads), int(attn_layers),
                             int(action_history), int(a2l_hidden), bool(data_init), bool(residual),
                             int(vq_warmup), bool(standardize))
