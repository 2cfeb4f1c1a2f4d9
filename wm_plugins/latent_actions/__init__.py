"""Latent action model ("Neural Atari" style): a VQ-VAE over frame transitions.

Components (see docs/latent_actions.md):

- encoder ``frames``: parameter-free per-frame view (flattened pixels).
- predictor ``latent_action_vqvae``: inverse-dynamics encoder (cross-attention or
  concat) -> codebook (EMA or gradient, optional dead-code restarts) -> decoder from
  the last k frames + code; action-to-latent classifier from real actions to codes.
- losses ``vq_recon``, ``action_to_latent_ce`` and ``latent_action_metrics`` (weight 0).
- stage ``latent_actions_report``: codebook-entropy plot (EMA vs gradient), ball
  reconstruction error near the labelled ball position, sweep comparison table.

Factories are registered lazily: loading the plugin imports neither torch nor pydantic models.
"""

from __future__ import annotations

from wm_framework import hookimpl, lazy


@hookimpl
def register_encoders(register):
    """The parameter-free `frames` encoder."""
    register("frames", lazy("wm_plugins.latent_actions.model:make_frames_encoder"),
             description="identity view of the frames (optionally gray/resized), flattened",
             example={"obs_shape": (1, 16, 16)})


@hookimpl
def register_predictors(register):
    """The latent action VQ-VAE."""
    register("latent_action_vqvae", lazy("wm_plugins.latent_actions.model:make_latent_action_vqvae"),
             description="VQ-VAE latent actions: IDM(frame_t, frame_t+1) -> code -> decoder; action-to-latent",
             example={"obs_shape": (1, 16, 16), "latent_dim": 256, "action_dim": 4, "codebook_size": 8, "code_dim": 8,
                      "width": 16, "heads": 2, "attn_layers": 1}, input="frames",
             causal=False)  # by design: position t reads frame t+1 (the IDM's transition), the last reads the action


@hookimpl
def register_losses(register):
    """VQ-VAE loss terms, action-to-latent cross-entropy and logged metrics."""
    register("vq_recon", lazy("wm_plugins.latent_actions.losses:make_vq_recon"),
             description="latent action VQ-VAE: recon MSE + codebook + commitment terms")
    register("action_to_latent_ce", lazy("wm_plugins.latent_actions.losses:make_action_to_latent_ce"),
             description="cross-entropy of the action-to-latent classifier on the VQ codes")
    register("latent_action_metrics", lazy("wm_plugins.latent_actions.losses:make_latent_action_metrics"),
             description="logged-only (weight 0): codebook usage/entropy/perplexity, recon PSNR, a2l accuracy")


@hookimpl
def register_stages(register):
    """The latent action report stage."""
    register("latent_actions_report", lazy("wm_plugins.latent_actions.report:make_report_stage"),
             config=lazy("wm_plugins.latent_actions.report_config:LatentActionsReportConfig"),
             description="codebook entropy plot, ball reconstruction error, sweep comparison")
