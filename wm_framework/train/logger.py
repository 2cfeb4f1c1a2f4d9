"""Metrics to metrics.jsonl (always), TensorBoard (when installed), W&B (when asked), and the console."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


class MetricsLogger:
    """One JSON object per logged step, flushed at once so a crash loses nothing logged."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb_cfg=None, recipe_name: str = "", config: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._f = open(self.path, "a", buffering=1)
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # noqa: BLE001 - optional
                self._tb = None
        if wandb_cfg is not None:
            try:
                import wandb
            except ModuleNotFoundError as e:
                from wm_framework.errors import WMUsageError

                raise WMUsageError('train.wandb: wandb is not installed (pip install "wm-framework[wandb]")') from e
            self._wandb = wandb.init(project=wandb_cfg.project, mode=wandb_cfg.mode, name=recipe_name,
                                     dir=str(run_dir), config=config or {})

    def log(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean) + "\n")
        step = int(record.get("step", 0))
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def log_image(self, tag: str, image, step: int, path: Path) -> None:
        """An RGB uint8 image [H, W, 3], already written to ``path``, to TensorBoard and W&B
        (metrics.jsonl holds numbers only; the file in the run directory is the record)."""
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(str(path))}, step=step)

    def log_video(self, tag: str, frames, step: int, fps: int, path: Path) -> None:
        """RGB uint8 frames [T, H, W, 3], already written to ``path`` (MP4), to TensorBoard and W&B.

        TensorBoard's ``add_video`` needs moviepy with ``moviepy.editor`` (gone in moviepy
        2); without it the clip is logged as one image of a few evenly spaced frames.
        W&B gets the MP4 file itself, so it needs no encoder of its own.
        """
        if self._tb is not None:
            if _has_moviepy_editor():
                self._tb.add_video(tag, frames.transpose(0, 3, 1, 2)[None], step, fps=fps)
            else:
                self._tb.add_image(tag, frame_row(frames), step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Video(str(path), fps=fps)}, step=step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _has_moviepy_editor() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("moviepy.editor") is not None
    except ModuleNotFoundError:  # moviepy itself is missing
        return False


def frame_row(frames, max_frames: int = 8, max_height: int = 256):
    """Up to ``max_frames`` evenly spaced frames of a clip [T, H, W, 3] side by side, shrunk by
    an integer step to at most ``max_height`` px tall: a still stand-in for a video."""
    import numpy as np

    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    step = max(1, -(-frames.shape[1] // max_height))
    return np.ascontiguousarray(np.concatenate(list(frames[idx, ::step, ::step]), axis=1))


class Progress:
    """Rich progress bar on a TTY; plain periodic lines otherwise (CI logs, pipes)."""

    def __init__(self, total: int, start: int, description: str, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.tty = sys.stdout.isatty()
        self._bar = None
        if enabled and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(description, total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, info: str, force_line: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif force_line:
            print(f"step {step}/{self.total} {info}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
