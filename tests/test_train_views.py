"""Training-time views (wm_framework/train/views.py) on tiny real runs: a `nextframe` model
trained for a few steps on a real bouncing-ball store writes image strips and rollout
videos that decode; the recipe keys switch them off; a latent-only model writes none."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from wm_framework.train.views import GAP, display_scale

SIZE = 16  # frames are 16x16: the model, the store and the pictures stay tiny
WINDOW = 3  # 2 context frames + the frame to predict
HORIZON = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from wm_framework.data.collect import collect

    path = tmp_path_factory.mktemp("views") / "ball.zarr"
    collect(str(path), env={"type": "bouncing_ball", "size": SIZE, "max_steps": 20}, policies=[{"type": "random"}],
            episodes=6, workers=1, seed=0, progress=False)
    return str(path)


NEXTFRAME = {"encoder": {"type": "frame_stack_cnn", "frames": 2, "size": SIZE, "latent_dim": 16, "channels": [4, 4, 8, 8]},
             "predictor": {"type": "cnn_decoder", "size": SIZE, "channels": [8, 4, 4, 4], "action_embed": 4},
             "losses": {"pixel": {"type": "pixel_mse"}}}
LATENT = {"encoder": {"type": "mlp", "latent_dim": 8, "hidden": 16},
          "predictor": {"type": "mlp", "hidden": 16},
          "losses": {"pred": {"type": "mse"}}}


def _train(tmp_path, store, model=NEXTFRAME, **views):
    """Four optimiser steps, validation every two; returns (run directory, RunContext)."""
    from wm_framework.recipe import validate
    from wm_framework.runs.context import RunContext, new_run_dir
    from wm_framework.train.loop import train

    views = {"video_horizon": HORIZON, "video_windows": 2, "image_windows": 3, **views}
    recipe = validate({
        "name": "views", "seed": 0, "stages": ["train"],
        "data": {"train": store, "window": WINDOW, "frameskip": 1, "val_fraction": 0.34},
        "model": model,
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "eval_every": 2, "log_every": 2, "checkpoint_every": 4,
                  "tensorboard": False, "device": "cpu", "threads": 1, "views": views}})
    ctx = RunContext(new_run_dir("views", tmp_path / "runs"), recipe, device="cpu")
    train(ctx, progress=False)
    return ctx.path, ctx


def _weights(run):
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / "last.safetensors")


def test_pixel_model_writes_strips_and_rollout_videos_that_decode(tmp_path, store):
    import imageio.v3 as iio
    from PIL import Image

    from wm_framework.model import prepare_obs
    from wm_framework.train.views import _fixed_windows

    run, ctx = _train(tmp_path, store)
    assert sorted(p.name for p in (run / "images").iterdir()) == ["step_000002.png", "step_000004.png"]
    s = display_scale(SIZE)
    with Image.open(run / "images" / "step_000004.png") as im:
        strip = np.asarray(im.convert("RGB"))
    k = WINDOW - 1  # context frames | prediction | truth
    assert strip.shape == (s * (3 * SIZE + 2 * GAP), s * ((k + 2) * SIZE + (k + 1) * GAP), 3)
    # The truth column is the true next frame of the fixed validation windows, in the
    # model's frame space (frame_stack_cnn: gray), upscaled by s.
    val = ctx.sampler("val")
    obs = prepare_obs(torch.as_tensor(val.get(_fixed_windows(val, 3))["obs"]))
    gray = ctx.build_model().encoder.preprocess(obs)[:, -1, 0]
    truth = (gray * 255).round().to(torch.uint8).numpy()
    x0 = s * (k + 1) * (SIZE + GAP)
    for row in range(3):
        y0 = s * row * (SIZE + GAP)
        np.testing.assert_array_equal(strip[y0 : y0 + s * SIZE : s, x0 : x0 + s * SIZE : s, 0], truth[row])
    assert stat.S_IMODE(os.stat(run / "images" / "step_000004.png").st_mode) == 0o666 & ~_umask()

    videos = sorted(p.name for p in (run / "videos").iterdir())
    assert videos == ["rollout_step_000002.mp4", "rollout_step_000004.mp4"]
    clip = iio.imread(run / "videos" / "rollout_step_000004.mp4", plugin="pyav", index=None)
    context = WINDOW - 1  # the model's history
    assert clip.shape[0] == context + HORIZON
    # 2 rollouts stacked (truth | prediction each), separated by a white bar
    assert clip.shape[1:3] == (s * (2 * SIZE + GAP), s * (2 * SIZE + GAP))


def test_keys_switch_views_off_and_views_never_change_training(tmp_path, store):
    only_images, _ = _train(tmp_path / "a", store, videos=False, image_every=1)
    assert sorted(p.name for p in (only_images / "images").iterdir()) == [f"step_{i:06d}.png" for i in (1, 2, 3, 4)]
    assert not (only_images / "videos").exists()
    only_videos, _ = _train(tmp_path / "b", store, images=False)
    assert not (only_videos / "images").exists() and len(list((only_videos / "videos").iterdir())) == 2
    nothing, _ = _train(tmp_path / "c", store, images=False, videos=False)
    assert not (nothing / "images").exists() and not (nothing / "videos").exists()
    # Pictures are taken in eval mode without gradients; the weights are those of a run without them.
    plain = _weights(nothing)
    for run in (only_images, only_videos):
        w = _weights(run)
        assert w.keys() == plain.keys() and all(torch.equal(w[n], plain[n]) for n in w)


def test_latent_only_model_writes_no_views(tmp_path, store):
    run, _ = _train(tmp_path, store, model=LATENT)
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert not (run / "images").exists() and not (run / "videos").exists()


def test_a_view_that_fails_to_write_is_a_warning_not_the_end_of_training(tmp_path, store, monkeypatch):
    import wm_framework.stages.evaluate.video as video

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video, "write_mp4", disk_full)
    with pytest.warns(RuntimeWarning) as caught:
        run, _ = _train(tmp_path, store)
    assert [str(w.message).split(" (")[0] for w in caught] == [
        f"train.views: could not write the rollout video at step {s}" for s in (2, 4)]
    assert "OSError: [Errno 28] No space left on device" in str(caught[0].message)
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert (run / "images" / "step_000004.png").is_file()  # the other view is unaffected


def test_view_keys_may_change_on_resume():
    from wm_framework.runs.resume import is_safe

    assert is_safe("train.views.videos") and is_safe("train.views.image_every")
    assert not is_safe("train.viewsx") and not is_safe("train.lr")


def test_video_stand_in_for_tensorboard_without_moviepy():
    from wm_framework.runs.tracker_backends import frame_row

    clip = np.zeros((18, 600, 100, 3), np.uint8)
    clip[:, :, :, 0] = np.arange(18)[:, None, None]
    row = frame_row(clip)  # 8 evenly spaced frames, shrunk by 3 to <= 256 px
    assert row.shape == (200, 8 * 34, 3)
    assert row[0, ::34, 0].tolist() == [0, 2, 5, 7, 10, 12, 15, 17]


def test_views_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from wm_framework.runs.tracker_backends import TensorBoardBackend
    from wm_framework.runs.trackers import Tracker
    from wm_framework.train.logger import MetricsLogger

    tracker = Tracker(tmp_path, [TensorBoardBackend.open(tmp_path / "tensorboard")])
    logger = MetricsLogger(tmp_path, tracker)
    image = np.zeros((8, 12, 3), np.uint8)
    logger.log_image("views/next_frame", image, 5, tmp_path / "x.png")
    logger.log_video("views/rollout", np.zeros((4, 8, 12, 3), np.uint8), 5, 8, tmp_path / "x.mp4")
    logger.close()
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["images"]
    assert "views/next_frame" in tags and "views/rollout" in tags
    assert events.Images("views/next_frame")[0].step == 5


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
