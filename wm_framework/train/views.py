"""Training-time views: pictures of what an observation-predicting model predicts, while it trains.

Numbers (loss, PSNR) say how far a next-frame model is from the truth; pictures say how
it is wrong (blurry, background only, the wrong action). For any model whose predictor
returns observations (it has ``next_obs``, the capability rollouts and ``_obs_metrics``
detect too) the trainer writes, on rank 0 only:

* ``images/step_<step>.png`` every ``train.views.image_every`` steps (default: the
  validation cadence) and at the end: one row per fixed window, the context frames the
  model saw | its teacher-forced prediction of the next frame | the true next frame;
* ``videos/rollout_step_<step>.mp4`` at every validation (``train.eval_every`` and the
  end): open-loop rollouts of ``video_horizon`` steps from a few fixed windows, ground
  truth left, prediction right, one window per row; a red bar marks the open-loop frames.

Both go to TensorBoard and W&B too when those loggers are on. The windows come from the
validation split (the training split when there is none) and are the same at every
view, so successive pictures show training progress rather than other data. Frames are
shown in the model's own frame space (e.g. gray 84x84 for ``frame_stack_cnn``).

Cost: a step that is not a view step pays one integer comparison. A view is a no-grad
forward of a few windows in eval mode; the torch RNG is re-seeded before every training
step, so views never change what training does. A failure to write a view is a warning,
never the end of training.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from wm_framework.atomic import atomic_write_bytes

GAP = 2  # white pixels between panels and rows, before upscaling
VIDEO_FPS = 8  # the eval stage's rate: 16 open-loop steps take 2 s


def display_scale(height: int, target: int = 128) -> int:
    """Integer nearest-neighbour upscale that makes a frame about ``target`` px tall (64 px
    frames are unreadable at native size; integer factors keep pixels crisp)."""
    return max(1, math.ceil(target / max(1, int(height))))


def _rgb(frames: np.ndarray) -> np.ndarray:
    """[..., H, W, 1|3] uint8 -> [..., H, W, 3]."""
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[..., C, H, W] float in [0, 1] -> [..., H, W, C] uint8."""
    x = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.moveaxis(x, -3, -1)


def image_strip(context: np.ndarray, pred: np.ndarray, truth: np.ndarray, scale: int = 1, gap: int = GAP) -> np.ndarray:
    """One row per window: context frames | prediction | truth, as one RGB uint8 image.

    ``context`` [N, K, H, W, C], ``pred`` and ``truth`` [N, H, W, C] uint8 (C = 1 or 3).
    Size: ``scale * (N*H + (N-1)*gap)`` by ``scale * ((K+2)*W + (K+1)*gap)``.
    """
    n, k, h, w = context.shape[:4]
    panels = np.concatenate([context, pred[:, None], truth[:, None]], axis=1)  # [N, K+2, H, W, C]
    panels = _rgb(panels)
    cols = k + 2
    out = np.full((n * h + (n - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i in range(n):
        for j in range(cols):
            y, x = i * (h + gap), j * (w + gap)
            out[y : y + h, x : x + w] = panels[i, j]
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


def rollout_clip(true: np.ndarray, pred: np.ndarray, context: int, scale: int = 1, gap: int = GAP) -> np.ndarray:
    """Windows of ground truth | prediction stacked vertically: [N, T, H, W, C] x2 -> [T, H', W', 3]."""
    from wm_framework.stages.evaluate.video import side_by_side

    rows = [side_by_side(t, p, scale=scale, marker_from=context) for t, p in zip(true, pred)]
    bar = np.full((rows[0].shape[0], gap * scale, rows[0].shape[2], 3), 255, np.uint8)
    parts = [rows[0]]
    for row in rows[1:]:
        parts += [bar, row]
    clip = np.concatenate(parts, axis=1)
    pad = clip.shape[1] % 2  # H.264 with yuv420p needs even sizes
    return np.pad(clip, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else clip


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _fixed_windows(sampler, n: int) -> np.ndarray:
    """Evenly spaced window indices of a sampler: the same windows at every view."""
    return np.unique(np.linspace(0, len(sampler) - 1, min(n, len(sampler))).round().astype(np.int64))


class TrainingViews:
    """Writes the image strips and rollout videos of one run; built by :meth:`for_run`."""

    def __init__(self, run_dir: Path, cfg, model, sampler, logger, device, eval_every: int):
        self.run_dir, self.cfg, self.model, self.sampler = Path(run_dir), cfg, model, sampler
        self.logger, self.device = logger, device
        self.image_every = cfg.image_every or eval_every
        self.eval_every = eval_every
        self._image_batch: dict | None = None
        self._video_batches: list[dict] | None = None
        self._images_on, self._videos_on = bool(cfg.images), bool(cfg.videos)

    @classmethod
    def for_run(cls, run_dir, cfg, model, sampler, logger, device, eval_every: int) -> "TrainingViews | None":
        """The run's views, or None when there is nothing to show: both switched off, or a
        model whose predictor does not return observations (latent-only models)."""
        if not (cfg.images or cfg.videos) or sampler is None or len(sampler) == 0:
            return None
        if not model.predicts_obs:
            return None
        if len(sampler.store.obs_shape) != 3:  # state vectors [D]: there is no picture to draw
            return None
        return cls(run_dir, cfg, model, sampler, logger, device, eval_every)

    # -- the one call from the training loop -------------------------------------------
    def after_step(self, step: int, total: int) -> None:
        """Write whichever view is due at ``step`` (cheap when none is)."""
        last = step == total
        if self._images_on and (step % self.image_every == 0 or last):
            self._guarded("image strip", step, self.write_image)
        if self._videos_on and (step % self.eval_every == 0 or last):
            self._guarded("rollout video", step, self.write_video)

    def _guarded(self, what: str, step: int, write) -> None:
        was_training = self.model.training
        try:
            self.model.eval()
            write(step)
        except Exception as e:  # noqa: BLE001 - a picture is never worth a training run
            warnings.warn(f"train.views: could not write the {what} at step {step} "
                          f"({type(e).__name__}: {e}); training continues", RuntimeWarning, stacklevel=2)
        finally:
            self.model.train(was_training)

    # -- image strip --------------------------------------------------------------------
    @torch.no_grad()
    def write_image(self, step: int) -> Path | None:
        """``images/step_<step>.png``: context | prediction | truth for fixed windows."""
        model = self.model
        if self._image_batch is None:
            self._image_batch = self.sampler.get(_fixed_windows(self.sampler, self.cfg.image_windows))
        batch = {k: torch.as_tensor(np.asarray(self._image_batch[k])).to(self.device) for k in ("obs", "action")}
        out = model(batch)
        to_frame = model.decode_obs
        pred, truth = to_frame(out["pred"][:, -1].float()), to_frame(out["target"][:, -1].float())
        if not self._are_images(pred):
            return None
        context = out["obs"][:, :-1]
        preprocess = getattr(model.encoder, "preprocess", None)
        if preprocess is not None:
            context = preprocess(context)  # the predicted frame's space (e.g. gray 84x84)
        if tuple(context.shape[2:]) != tuple(truth.shape[1:]):
            context = context[:, :0]  # a frame space we cannot reproduce: show prediction | truth only
        image = image_strip(_to_uint8(context), _to_uint8(pred), _to_uint8(truth), scale=display_scale(truth.shape[-2]))
        path = self.run_dir / "images" / f"step_{step:06d}.png"
        atomic_write_bytes(path, _png_bytes(image))
        self.logger.log_image("views/next_frame", image, step, path)
        return path

    def _are_images(self, frames: torch.Tensor) -> bool:
        """Predicted observations that are not images (e.g. state vectors) get no views."""
        if frames.dim() == 4 and frames.shape[1] in (1, 3):
            return True
        warnings.warn(f"train.views: the model predicts observations of shape {tuple(frames.shape[1:])}, "
                      "not images [C, H, W] with 1 or 3 channels; no image strips or rollout videos",
                      RuntimeWarning, stacklevel=3)
        self._images_on = self._videos_on = False
        return False

    # -- rollout video ------------------------------------------------------------------
    def write_video(self, step: int) -> Path | None:
        """``videos/rollout_step_<step>.mp4``: open-loop rollouts from fixed windows."""
        from wm_framework.stages.evaluate.rollout import evaluate_rollouts
        from wm_framework.stages.evaluate.video import write_mp4

        context = int(self.model.history or 1)
        horizon = int(self.cfg.video_horizon)
        if self._video_batches is None:
            self._video_batches = self._rollout_windows(context + horizon)
        if not self._video_batches:
            return None
        res = evaluate_rollouts(self.model, self._video_batches, horizons=(horizon,), context=context,
                                device=self.device, keep_samples=self.cfg.video_windows)
        if res.samples_true is None:  # the rollout says the predictions are not frames
            return None
        scale = display_scale(res.samples_true.shape[2])
        clip = rollout_clip(res.samples_true, res.samples_pred, context, scale=scale)
        path = write_mp4(clip, self.run_dir / "videos" / f"rollout_step_{step:06d}.mp4", fps=VIDEO_FPS)
        self.logger.log_video("views/rollout", clip, step, VIDEO_FPS, path)
        return path

    def _rollout_windows(self, length: int) -> list[dict]:
        """A few windows of ``length`` frames from different episodes of the views' split.

        A sampler over only those episodes: the split's own sampler has the training
        window length, and a second one over the whole split would hold it in RAM twice.
        """
        from wm_framework.data.sampler import WindowSampler
        from wm_framework.stages.evaluate.rollout import sampler_batches

        store, fs = self.sampler.store, self.sampler.frameskip
        episodes = np.unique(self.sampler.episodes)
        long_enough = episodes[store.episode_lengths[episodes] > (length - 1) * fs]
        if len(long_enough) == 0:
            warnings.warn(f"train.views: no episode has the {length} frames (context + video_horizon) of a rollout "
                          "video; lower train.views.video_horizon. No rollout videos", RuntimeWarning, stacklevel=3)
            self._videos_on = False
            return []
        n = int(self.cfg.video_windows)
        chosen = long_enough[np.unique(np.linspace(0, len(long_enough) - 1, min(n, len(long_enough))).round().astype(np.int64))]
        sampler = WindowSampler(store, chosen, length, fs, mode="ram", labels=[])
        return list(sampler_batches(sampler, n, batch_size=n))
