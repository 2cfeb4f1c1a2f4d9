"""Registry factories of the LeWM plugin: recipe parameters in, torch modules out.

This module imports no torch at top level (the plugin loader imports it to read the
factory signatures, and `wm --help` must stay fast); each factory imports its model
module when called. Presets are plain dicts so `wm components list` can show them.
"""

from __future__ import annotations

from wm_framework.errors import WMUsageError

#: Named sizes; explicit factory arguments override single fields.
VIT_PRESETS = {
    "tiny": dict(image_size=224, patch_size=14, width=192, depth=12, heads=3, mlp_ratio=4.0),
    "small": dict(image_size=224, patch_size=14, width=384, depth=12, heads=6, mlp_ratio=4.0),
}

PREDICTOR_PRESETS = {
    "lewm": dict(depth=6, heads=16, head_dim=64, mlp_dim=2048, dropout=0.1),
}


def build_vit_encoder(
    preset: str = "tiny",
    image_size: int | list[int] | None = None,
    patch_size: int | None = None,
    width: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    mlp_ratio: float | None = None,
    mlp_dim: int | None = None,
    pooling: str = "cls",
    normalize: bool = True,
    projector: bool = True,
    projector_hidden: int = 2048,
    crop: list[int] | None = None,
    resize: str = "bilinear",
    stem: str = "patch",
    obs_shape: list[int] | tuple[int, ...] | None = None,
):
    """ViT encoder trained from scratch (LeWM): pixels -> CLS token -> BatchNorm projector.

    Args:
        preset: named size, "tiny" (LeWM: 224 px, patch 14, 192 wide, 12 deep, 3 heads) or "small".
        image_size: side (or [height, width]) the frames are resized to; overrides the preset.
        patch_size: patch side in pixels (the stride of the patch-embedding conv).
        width: token width D (also the latent size `out_dim`).
        depth: number of transformer blocks.
        heads: attention heads (width must be divisible by it).
        mlp_ratio: MLP hidden size as a multiple of width (preset: 4.0).
        mlp_dim: MLP hidden size; wins over mlp_ratio when given.
        pooling: "cls" (LeWM), "mean" (mean of the patch tokens; a probe baseline) or
            "flatten" (a linear map of the whole patch-token grid to width: position-aware).
        normalize: apply ImageNet mean/std after scaling to [0, 1].
        projector: put the Linear-BatchNorm-GELU-Linear projector after the pooled token.
        projector_hidden: hidden width of that projector (LeWM: 2048).
        crop: [top, bottom, left, right] in the stored frame's pixels (bottom/right
            exclusive), cut before the resize; e.g. Breakout's play field on native
            210x160 frames is [32, 196, 8, 152] (no score, no walls). None: the whole frame.
        resize: filter of the resize to image_size: "bilinear" (antialiased, LeWM),
            "area" (average) or "max" (keeps a tiny bright object, e.g. the ball, at full
            intensity).
        stem: "patch" (LeWM: one conv with stride = patch_size) or "conv" (log2(patch_size)
            3x3 stride-2 convs with BatchNorm and ReLU, then a 1x1 conv: the same token grid,
            but a small object is seen whole by overlapping windows; needs a power-of-two patch).
        obs_shape: (C, H, W) of one frame; data parameter passed by the core. Only
            checked (1 or 3 channels); any H, W is resized on the fly.
    """
    if preset not in VIT_PRESETS:
        raise WMUsageError(f"vit: unknown preset {preset!r}; presets: {', '.join(VIT_PRESETS)}")
    if obs_shape is not None and (len(obs_shape) != 3 or obs_shape[0] not in (1, 3)):
        raise WMUsageError(f"vit: needs pixel frames with 1 or 3 channels (C, H, W), got obs_shape {tuple(obs_shape)}")
    if pooling not in ("cls", "mean", "flatten"):
        raise WMUsageError(f"vit: pooling must be 'cls', 'mean' or 'flatten', got {pooling!r}")
    if resize not in ("bilinear", "area", "max"):
        raise WMUsageError(f"vit: resize must be 'bilinear', 'area' or 'max', got {resize!r}")
    if crop is not None:
        if len(crop) != 4 or not all(isinstance(c, int) and c >= 0 for c in crop) or crop[0] >= crop[1] or crop[2] >= crop[3]:
            raise WMUsageError(f"vit: crop must be [top, bottom, left, right] with top < bottom and left < right, got {crop!r}")
        if obs_shape is not None and (crop[1] > obs_shape[1] or crop[3] > obs_shape[2]):
            raise WMUsageError(f"vit: crop {list(crop)} does not fit stored frames of {obs_shape[1]}x{obs_shape[2]}")
    if stem not in ("patch", "conv"):
        raise WMUsageError(f"vit: stem must be 'patch' or 'conv', got {stem!r}")
    cfg = dict(VIT_PRESETS[preset])
    given = dict(image_size=image_size, patch_size=patch_size, width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio)
    cfg.update({k: v for k, v in given.items() if v is not None})
    if stem == "conv" and (cfg["patch_size"] < 2 or cfg["patch_size"] & (cfg["patch_size"] - 1)):
        raise WMUsageError(f"vit: stem 'conv' needs a power-of-two patch_size, got {cfg['patch_size']}")
    hidden = int(mlp_dim) if mlp_dim is not None else int(round(cfg["width"] * cfg["mlp_ratio"]))
    from wm_plugins.lewm.vit import ViTEncoder

    return ViTEncoder(cfg["image_size"], cfg["patch_size"], cfg["width"], cfg["depth"], cfg["heads"], hidden,
                      pooling=pooling, normalize=normalize, projector=projector, projector_hidden=projector_hidden,
                      crop=crop, resize=resize, stem=stem)


def build_ar_transformer(
    preset: str = "lewm",
    latent_dim: int = 192,
    action_dim: int = 10,
    history: int = 3,
    depth: int | None = None,
    heads: int | None = None,
    head_dim: int | None = None,
    mlp_dim: int | None = None,
    dropout: float | None = None,
    action_smoothed_dim: int = 10,
    projector: bool = True,
    projector_hidden: int = 2048,
    norm_style: str = "released",
):
    """Causal transformer predictor with per-step AdaLN-Zero action conditioning (LeWM).

    Args:
        preset: named size; "lewm" = 6 blocks, 16 heads x 64 dims, MLP 2048, dropout 0.1.
        latent_dim: width D of the latents in and out; data parameter (encoder.out_dim).
        action_dim: width of one frame's float action block (frameskip x n); data parameter.
        history: context frames the predictor attends to (learned positions); data parameter.
        depth: number of transformer blocks; overrides the preset.
        heads: attention heads; overrides the preset.
        head_dim: width of each head (inner attention width = heads x head_dim).
        mlp_dim: MLP hidden width; overrides the preset.
        dropout: dropout on attention weights and residual branches (LeWM: 0.1).
        action_smoothed_dim: width the action block is first squeezed to (LeWM: 10).
        projector: end in the Linear-BatchNorm-GELU-Linear projector (as the encoder does).
        projector_hidden: hidden width of that projector.
        norm_style: "released" (the released LeWM function: non-affine LayerNorm, action
            modulation, then the branch's own affine LayerNorm; final norm eps 1e-5) or
            "single" (one affine LayerNorm then the modulation, eps 1e-6). Same parameter count.
    """
    if norm_style not in ("released", "single"):
        raise WMUsageError(f"ar_transformer: norm_style must be 'released' or 'single', got {norm_style!r}")
    if preset not in PREDICTOR_PRESETS:
        raise WMUsageError(f"ar_transformer: unknown preset {preset!r}; presets: {', '.join(PREDICTOR_PRESETS)}")
    for name, value in (("latent_dim", latent_dim), ("action_dim", action_dim), ("history", history)):
        if int(value) < 1:
            raise WMUsageError(f"ar_transformer: {name} must be >= 1, got {value}")
    cfg = dict(PREDICTOR_PRESETS[preset])
    given = dict(depth=depth, heads=heads, head_dim=head_dim, mlp_dim=mlp_dim, dropout=dropout)
    cfg.update({k: v for k, v in given.items() if v is not None})
    from wm_plugins.lewm.predictor import ARTransformerPredictor

    return ARTransformerPredictor(int(latent_dim), int(action_dim), int(history), int(cfg["depth"]), int(cfg["heads"]),
                                  int(cfg["head_dim"]), int(cfg["mlp_dim"]), float(cfg["dropout"]),
                                  action_smoothed_dim=action_smoothed_dim, projector=projector,
                                  projector_hidden=projector_hidden, norm_style=norm_style)


def build_latent_mse():
    """JEPA prediction loss: MSE between predicted and actual next embeddings (targets not detached)."""
    from wm_plugins.lewm.losses import latent_mse

    return latent_mse


def build_sigreg(num_directions: int = 1024, num_knots: int = 17, t_max: float = 3.0, lam: float = 0.09,
                 gather=None):
    """SIGReg anti-collapse regulariser on out["z"], already multiplied by lam (LeWM: 0.09).

    Args:
        num_directions: random unit directions drawn per call (LeWM: 1024).
        num_knots: points t evenly spaced in [0, t_max] for the trapezoid integral (LeWM: 17).
        t_max: upper end of the integration range (LeWM: 3.0).
        lam: weight folded into the term (LeWM code: 0.09; the paper says 0.1). Keep the
            recipe-level `weight` at 1.0.
        gather: Python only (not settable from a recipe): callable z[B,T,D] -> global
            z[B_all,T,D]; under DDP the trainer passes an all-gather that keeps gradients.
    """
    from wm_plugins.lewm.losses import SIGRegLoss

    if num_directions < 1 or num_knots < 2 or t_max <= 0:
        raise WMUsageError("sigreg: need num_directions >= 1, num_knots >= 2 and t_max > 0")
    if gather is not None and not callable(gather):
        raise WMUsageError("sigreg: gather must be a callable (set by the trainer under DDP), not a recipe value")
    return SIGRegLoss(int(num_directions), int(num_knots), float(t_max), float(lam), gather)
