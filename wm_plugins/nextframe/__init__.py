"""Pixel next-frame world model: frame-stack CNN encoder, FiLM CNN decoder, pixel losses.

A model that predicts observations (the predictor has ``next_obs``), so open-loop
rollouts decode each predicted frame, feed it back and re-encode (wm_framework.stages.evaluate).
"""

from __future__ import annotations

from wm_framework import hookimpl, lazy


@hookimpl
def register_encoders(register):
    """Register the `frame_stack_cnn` encoder."""
    register("frame_stack_cnn", lazy("wm_plugins.nextframe.model:make_frame_stack_cnn"),
             example={"obs_shape": (3, 32, 32), "size": 32, "latent_dim": 16, "channels": (8, 8, 8, 8)})


@hookimpl
def register_predictors(register):
    """Register the `cnn_decoder` predictor."""
    register("cnn_decoder", lazy("wm_plugins.nextframe.model:make_cnn_decoder"),
             example={"obs_shape": (3, 32, 32), "size": 32, "latent_dim": 16, "action_dim": 3, "channels": (8, 8, 8, 8),
                      "action_embed": 8})


@hookimpl
def register_losses(register):
    """Register the `pixel_huber` and `pixel_mse` losses."""
    register("pixel_huber", lazy("wm_plugins.nextframe.losses:make_pixel_huber"))
    register("pixel_mse", lazy("wm_plugins.nextframe.losses:make_pixel_mse"))
