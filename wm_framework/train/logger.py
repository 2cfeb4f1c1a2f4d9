"""Metrics to metrics.jsonl (always) and the run's trackers (TensorBoard, W&B: ``runs/trackers.py``)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLogger:
    """One JSON object per logged step, flushed at once so a crash loses nothing logged; the
    same records, image strips and videos go on to the run's tracker (``ctx.tracker``)."""

    def __init__(self, run_dir: Path, tracker=None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._f = open(self.path, "a", buffering=1)
        self.tracker = tracker

    def log(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean) + "\n")
        if self.tracker is not None:
            self.tracker.log_scalars(record)

    def log_image(self, tag: str, image, step: int, path: Path) -> None:
        """An RGB uint8 image [H, W, 3], already written to ``path`` (metrics.jsonl holds
        numbers only; the file in the run directory is the record)."""
        if self.tracker is not None:
            self.tracker.log_image(tag, image, step, path)

    def log_video(self, tag: str, frames, step: int, fps: int, path: Path) -> None:
        """RGB uint8 frames [T, H, W, 3], already written to ``path`` (MP4)."""
        if self.tracker is not None:
            self.tracker.log_video(tag, frames, step, fps, path)

    def close(self) -> None:
        """Close metrics.jsonl; the tracker stays open for the stages after training."""
        self._f.close()
        if self.tracker is not None:
            self.tracker.flush()
