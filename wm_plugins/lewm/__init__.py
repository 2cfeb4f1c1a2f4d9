"""LeWM: a JEPA world model trained end to end from pixels (ViT encoder, AdaLN predictor, SIGReg).

Components:

- encoder ``vit``: ViT from scratch, CLS token -> BatchNorm projector (``vit.py``).
- predictor ``ar_transformer``: causal transformer, per-step AdaLN-Zero action
  conditioning, BatchNorm projector (``predictor.py``).
- losses ``latent_mse`` and ``sigreg`` (``losses.py``; the statistic in ``sigreg.py``).

The factories (recipe parameters, presets) live in ``factories.py``.

Torch is imported only when a component is built, so ``wm --help`` stays fast.
"""

from __future__ import annotations

from wm_framework import hookimpl, lazy


@hookimpl
def register_encoders(register):
    """The LeWM ViT encoder."""
    register("vit", lazy("wm_plugins.lewm.factories:build_vit_encoder"), description="ViT from scratch (LeWM ViT-Tiny): CLS token -> BatchNorm projector",
             example={"obs_shape": (3, 32, 32), "image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "heads": 2,
                      "projector_hidden": 64})


@hookimpl
def register_predictors(register):
    """The LeWM action-conditioned causal transformer."""
    register("ar_transformer", lazy("wm_plugins.lewm.factories:build_ar_transformer"),
             description="causal transformer with per-step AdaLN-Zero action conditioning (LeWM)",
             example={"latent_dim": 32, "action_dim": 4, "history": 4, "depth": 2, "heads": 4, "head_dim": 8, "mlp_dim": 64,
                      "projector_hidden": 64})


@hookimpl
def register_losses(register):
    """The LeWM loss terms."""
    register("latent_mse", lazy("wm_plugins.lewm.factories:build_latent_mse"), description="MSE between predicted and next embeddings (not detached)")
    register("sigreg", lazy("wm_plugins.lewm.factories:build_sigreg"), description="SIGReg: Epps-Pulley test of random 1-D projections vs N(0,1)")
