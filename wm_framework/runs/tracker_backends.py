"""The two trackers behind a run's :class:`~wm_framework.runs.trackers.Tracker`: TensorBoard
and Weights & Biases, each taking the same five calls (scalars, image, video, results,
media file).

* **TensorBoard** (``<run>/tensorboard``, when the package is installed): scalars,
  images (``add_image``) and videos (``add_video``; it needs moviepy with
  ``moviepy.editor``, gone in moviepy 2, so without it a clip is one image of a few evenly
  spaced frames). A stage's results become scalars; tables have no TensorBoard form.
* **W&B** follows its own conventions: ``WANDB_MODE``, ``WANDB_PROJECT``, ``WANDB_ENTITY``
  and the rest of its environment apply unless ``[train.wandb]`` sets the value. Results
  become ``wandb.Table`` s and summary values; pictures and videos are logged from their
  files (W&B needs no encoder of its own).

Both libraries are imported only here, and only when a run turns them on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wm_framework.errors import WMUsageError

#: The W&B project when neither the recipe nor WANDB_PROJECT names one (W&B's own
#: fallback, "uncategorized", would mix every project's runs).
DEFAULT_PROJECT = "wm-framework"


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


def read_image(path: Path):
    """A PNG/JPEG file as RGB uint8 [H, W, 3]."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_video(path: Path):
    """An MP4 file as (RGB uint8 frames [T, H, W, 3], fps)."""
    import imageio.v3 as iio

    frames = iio.imread(path, plugin="pyav", index=None)
    fps = iio.immeta(path, plugin="pyav").get("fps") or 8
    return frames, int(round(fps))


class TensorBoardBackend:
    """A SummaryWriter on ``<run>/tensorboard`` (every process adds its own event file)."""

    name = "TensorBoard"

    def __init__(self, writer):
        self._tb = writer

    @classmethod
    def open(cls, log_dir: Path) -> "TensorBoardBackend | None":
        """None when tensorboard is not installed: TensorBoard is optional (``train.tensorboard``
        says "when it is installed")."""
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except Exception:  # noqa: BLE001 - optional
            return None
        return cls(SummaryWriter(str(log_dir)))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self._tb.add_scalar(k, v, step)

    def image(self, tag: str, image, step: int, path: Path | None = None) -> None:
        self._tb.add_image(tag, image, step, dataformats="HWC")

    def video(self, tag: str, frames, step: int, fps: int, path: Path | None = None) -> None:
        if _has_moviepy_editor():
            self._tb.add_video(tag, frames.transpose(0, 3, 1, 2)[None], step, fps=fps)
        else:
            self._tb.add_image(tag, frame_row(frames), step, dataformats="HWC")

    def results(self, key: str, scalars: dict[str, float], tables: dict, step: int) -> None:
        self.scalars({f"{key}/{k}": v for k, v in scalars.items()}, step)

    def media_file(self, tag: str, path: Path, kind: str, step: int) -> None:
        if kind == "image":
            self.image(tag, read_image(path), step)
        else:
            frames, fps = read_video(path)
            self.video(tag, frames, step, fps)

    def flush(self) -> None:
        self._tb.flush()

    def close(self, failed: bool = False) -> None:
        self._tb.close()


def wandb_init_kwargs(cfg, run_dir: Path, name: str, group: str | None, config: dict, run_id: str) -> dict:
    """``wandb.init`` keywords: a recipe value wins; an unset one is left to W&B's environment
    (WANDB_MODE, WANDB_ENTITY, ...), the project falling back to WANDB_PROJECT, then
    :data:`DEFAULT_PROJECT`."""
    kw: dict[str, Any] = {
        "dir": str(run_dir),  # W&B writes <run>/wandb/<its run folder>: everything of a run in one place
        "name": name, "id": run_id, "resume": "allow", "config": config,
        "project": cfg.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        # Every Tracker holds its own run: sweep runs, and a stage command after training, in
        # one process never hand back or finish each other's run.
        "reinit": "create_new",
    }
    for key in ("entity", "mode", "tags"):
        value = getattr(cfg, key)
        if value is not None:
            kw[key] = list(value) if key == "tags" else value
    if cfg.group or group:
        kw["group"] = cfg.group or group
    return kw


class WandbBackend:
    """One W&B run, resumed by its stored id (``resume="allow"``)."""

    name = "W&B"

    def __init__(self, run, wandb):
        self._run, self._wandb = run, wandb

    @classmethod
    def open(cls, cfg, run_dir: Path, name: str, group: str | None, config: dict, run_id: str) -> "WandbBackend":
        try:
            import wandb
        except ModuleNotFoundError as e:
            raise WMUsageError('train.wandb: wandb is not installed (pip install "wm-framework[wandb]")') from e
        try:
            run = wandb.init(**wandb_init_kwargs(cfg, run_dir, name, group, config, run_id))
        except Exception as e:  # noqa: BLE001 - e.g. online without an API key: one line, with the way out
            first = (str(e).strip().splitlines() or [""])[0]
            raise WMUsageError(f"train.wandb: W&B did not start ({type(e).__name__}: {first}); log in with "
                               "`wandb login`, or set WANDB_MODE=offline (or train.wandb.mode = \"offline\")") from e
        return cls(run, wandb)

    def scalars(self, values: dict, step: int) -> None:
        self._run.log(values, step=step)

    def image(self, tag: str, image, step: int | None, path: Path | None = None) -> None:
        self._log({tag: self._wandb.Image(str(path) if path is not None else image)}, step)

    def video(self, tag: str, frames, step: int | None, fps: int, path: Path | None = None) -> None:
        if path is not None:  # the MP4 itself (W&B ignores fps for a file)
            self._log({tag: self._wandb.Video(str(path))}, step)
        else:
            self._log({tag: self._wandb.Video(frames.transpose(0, 3, 1, 2), fps=fps, format="mp4")}, step)

    def results(self, key: str, scalars: dict[str, float], tables: dict, step: int) -> None:
        self._run.summary.update({f"{key}/{k}": v for k, v in scalars.items()})
        # No step: after a resume W&B's step counter may be past the training step, and a
        # step lower than the counter is dropped; tables belong to no step anyway.
        self._run.log({f"{key}/{name}": self._wandb.Table(columns=cols, data=rows, allow_mixed_types=True)
                       for name, (cols, rows) in tables.items()})

    def media_file(self, tag: str, path: Path, kind: str, step: int) -> None:
        if kind == "image":
            self.image(tag, None, None, path)
        else:
            self.video(tag, None, None, 0, path)

    def _log(self, data: dict, step: int | None) -> None:
        if step is None:
            self._run.log(data)
        else:
            self._run.log(data, step=step)

    def flush(self) -> None:
        pass  # W&B's own service process writes as it goes

    def close(self, failed: bool = False) -> None:
        self._run.finish(exit_code=1 if failed else 0)
