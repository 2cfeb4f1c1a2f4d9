"""The [latent_actions_report] table (pydantic only, so the plugin loads without torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LatentActionsReportConfig(BaseModel):
    """Settings of the `latent_actions_report` stage."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["test", "holdout", "val"] = Field(default="test", description="Windows scored for reconstruction.")
    windows: int = Field(default=256, ge=1, description="Windows scored per run.")
    batch_size: int = Field(default=32, ge=1, description="Windows per forward pass.")
    checkpoint: str = Field(default="last", description="Checkpoint to score: last, best, a label or a path.")
    ball_radius: int = Field(default=3, ge=0, description="Half-size in pixels of the square around the labelled ball.")
    ball_x: str = Field(default="ball_x", description="Label with the ball column (frame pixels).")
    ball_y: str = Field(default="ball_y", description="Label with the ball row (frame pixels).")
    entropy_key: str = Field(default="train/stats/entropy", description="metrics.jsonl key plotted over training.")
