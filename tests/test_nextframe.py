"""The pixel next-frame model: shapes, frame stacking, targets, losses, and that it learns the action."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wm_framework as wm
from wm_framework.errors import WMUsageError
from wm_framework.stages.evaluate.rollout import evaluate_rollouts
from wm_framework.model import ActionSpec, WorldModel, prepare_obs

torch.set_num_threads(1)


def _model(**enc_kw):
    enc = wm.create("encoders", "frame_stack_cnn", obs_shape=(3, 64, 64), **enc_kw)
    pred = wm.create("predictors", "cnn_decoder", latent_dim=enc.out_dim, action_dim=15, history=4,
                     grayscale=enc.grayscale, size=enc_kw.get("size", 84), obs_shape=(3, 64, 64))
    return WorldModel(enc, pred, ActionSpec("discrete", 15, 1))


def _batch(b=2, length=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"obs": torch.as_tensor(rng.integers(0, 256, (b, length, 64, 64, 3), dtype=np.uint8)),
            "action": torch.as_tensor(rng.integers(0, 15, (b, length, 1)))}


def test_registered_components():
    assert {"frame_stack_cnn"} <= set(wm.components("encoders"))
    assert {"cnn_decoder"} <= set(wm.components("predictors"))
    assert {"pixel_huber", "pixel_mse"} <= set(wm.components("losses"))


def test_default_shapes_gray_84():
    model = _model()
    with torch.no_grad():
        out = model(_batch())
    assert out["z"].shape == (2, 5, 512) and model.encoder.out_dim == 512
    assert out["pred"].shape == out["target"].shape == (2, 4, 84 * 84)
    assert 0 < float(out["pred"].min()) and float(out["pred"].max()) < 1  # sigmoid
    frame = model.predictor.next_obs(out["pred"][:, -1])
    assert frame.shape == (2, 1, 84, 84)


def test_target_is_the_next_preprocessed_frame():
    model = _model()
    batch = _batch()
    obs = prepare_obs(batch["obs"])
    out = model(batch)
    expected = model.encoder.preprocess(obs[:, 1:]).flatten(2)
    assert torch.equal(out["target"], expected)
    # Luma of an RGB frame, resized: a pure red frame becomes 0.299 everywhere.
    red = torch.zeros(1, 1, 3, 64, 64)
    red[:, :, 0] = 1
    assert torch.allclose(model.encoder.preprocess(red), torch.full((1, 1, 1, 84, 84), 0.299), atol=1e-5)
    pre = model.encoder.preprocess(obs)
    assert torch.equal(model.encoder.preprocess(pre), pre)  # idempotent: rollouts feed predictions back


def test_rgb_native_size():
    model = _model(grayscale=False, size=None, frames=2, latent_dim=64)
    out = model(_batch(length=3))
    assert out["z"].shape == (2, 3, 64)
    assert out["pred"].shape == (2, 2, 3 * 64 * 64)


def test_frame_stack_repeats_the_first_frame():
    enc = wm.create("encoders", "frame_stack_cnn", frames=3, size=16)
    frames = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 1, 16, 16)
    stacked = enc.stack(frames)[0, :, :, 0, 0]
    assert stacked.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]


def test_mismatched_encoder_and_predictor_is_a_usage_error():
    enc = wm.create("encoders", "frame_stack_cnn", size=32, obs_shape=(3, 64, 64))
    pred = wm.create("predictors", "cnn_decoder", latent_dim=512, action_dim=15, size=84)
    model = WorldModel(enc, pred, ActionSpec("discrete", 15, 1))
    with pytest.raises(WMUsageError, match="must agree on the frame size"):
        evaluate_rollouts(model, [_batch(length=6)], horizons=(1,), context=4)
    gray_pred = wm.create("predictors", "cnn_decoder", latent_dim=512, action_dim=15, grayscale=False)
    with pytest.raises(WMUsageError, match="same grayscale/size"):
        gray_pred.make_target(None, prepare_obs(_batch()["obs"])[:, :, :1])  # 1-channel frames, RGB decoder
    with pytest.raises(WMUsageError, match="unknown parameter"):
        wm.create("encoders", "frame_stack_cnn", stack=4)


def test_losses_known_values():
    pred = torch.full((2, 3, 10), 0.4)
    out = {"pred": pred, "target": pred + 0.2}
    mse = wm.create("losses", "pixel_mse")(out, {})
    huber = wm.create("losses", "pixel_huber")(out, {})
    assert float(mse.detach()) == pytest.approx(0.04, rel=1e-5)
    assert float(huber.detach()) == pytest.approx(0.02, rel=1e-5)  # delta=1, errors < 1: half the MSE
    assert float(wm.create("losses", "pixel_huber", delta=0.1)(out, {})) == pytest.approx(0.1 * (0.2 - 0.05), rel=1e-5)


def _action_brightness_batch(rng, b=32):
    """16x16 frames of a random level b plus a fixed texture; action 1 makes the next frame
    brighter by 0.3, action 0 darker. The first frame does not tell which: only the action does."""
    texture = np.linspace(-0.1, 0.1, 16)[None, :] * np.ones((16, 1))
    level = rng.uniform(0.35, 0.65, b)
    a = rng.integers(0, 2, b)
    nxt = level + np.where(a == 1, 0.3, -0.3)
    frames = np.stack([level[:, None, None] + texture, nxt[:, None, None] + texture], 1)
    obs = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)[..., None]
    action = np.stack([a, np.full(b, -1)], 1)[..., None]
    return {"obs": torch.as_tensor(obs), "action": torch.as_tensor(action)}


def _fit(model, next_batch, loss: str, steps: int, lr: float = 3e-3) -> None:
    """Adam on fresh batches from ``next_batch()`` for ``steps`` steps."""
    loss_fn = wm.create("losses", loss)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = next_batch()
        value = loss_fn(model(batch), batch)
        opt.zero_grad()
        value.backward()
        opt.step()


def test_the_action_changes_the_prediction_after_training():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    enc = wm.create("encoders", "frame_stack_cnn", frames=1, size=16, latent_dim=32, channels=[8, 8, 16, 16],
                    obs_shape=(1, 16, 16))
    pred = wm.create("predictors", "cnn_decoder", latent_dim=32, action_dim=2, history=1, size=16,
                     channels=[16, 8, 8, 8], action_embed=8)
    model = WorldModel(enc, pred, ActionSpec("discrete", 2, 1))
    _fit(model, lambda: _action_brightness_batch(rng), "pixel_huber", steps=120)
    model.eval()
    test = _action_brightness_batch(np.random.default_rng(1), b=64)
    flipped = {"obs": test["obs"], "action": torch.where(test["action"] >= 0, 1 - test["action"], test["action"])}
    with torch.no_grad():
        right, wrong = model(test), model(flipped)
    err_right = float((right["pred"] - right["target"]).pow(2).mean())
    err_wrong = float((wrong["pred"] - right["target"]).pow(2).mean())
    # Ignoring the action costs ~0.3^2 = 0.09; the wrong action ~0.36.
    assert err_right < 0.02 and err_wrong > 0.1, (err_right, err_wrong)
    assert float((right["pred"] - wrong["pred"]).abs().mean()) > 0.2


# ----------------------------------------------------------------------------- skip connection and flow
def _skip_model(flow=False, size=16, frames=2, action_dim=2):
    enc = wm.create("encoders", "frame_stack_cnn", frames=frames, size=size, latent_dim=16, channels=[8, 8, 16, 16],
                    obs_shape=(1, size, size), skip=True)
    pred = wm.create("predictors", "cnn_decoder", latent_dim=enc.out_dim, action_dim=action_dim, history=frames,
                     size=size, channels=[16, 8, 8, 8], action_embed=8, skip_frames=frames, flow=flow)
    return WorldModel(enc, pred, ActionSpec("discrete", action_dim, 1))


@pytest.mark.parametrize("flow", [False, True])
def test_skip_decoder_starts_as_copy_last_frame(flow):
    model = _skip_model(flow)
    assert model.encoder.out_dim == 16 + 2 * 16 * 16
    rng = np.random.default_rng(0)
    batch = {"obs": torch.as_tensor(rng.integers(0, 256, (2, 4, 16, 16, 1), dtype=np.uint8)),
             "action": torch.as_tensor(rng.integers(0, 2, (2, 4, 1)))}
    with torch.no_grad():
        out = model(batch)
    frames = model.encoder.preprocess(prepare_obs(batch["obs"]))
    assert torch.allclose(out["pred"], frames[:, :-1].flatten(2), atol=1e-6)  # prediction of t+1 = frame t


def test_warp_moves_whole_pixels_and_zero_flow_is_identity():
    from wm_plugins.nextframe.frames import warp

    frame = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.allclose(warp(frame, torch.zeros(1, 2, 5, 5)), frame)
    right = torch.zeros(1, 2, 5, 5)
    right[:, 0] = -1  # every pixel samples its left neighbour: the image moves one pixel right
    moved = warp(frame, right)
    assert torch.allclose(moved[..., 1:], frame[..., :-1]) and torch.allclose(moved[..., 0], frame[..., 0])


def test_flow_and_skip_need_each_other():
    with pytest.raises(WMUsageError, match="flow = true"):
        wm.create("predictors", "cnn_decoder", latent_dim=512, action_dim=15, size=16, flow=True)
    with pytest.raises(WMUsageError, match="skip_frames=4 needs an encoder with skip = true"):
        wm.create("predictors", "cnn_decoder", latent_dim=512, action_dim=15, size=16, skip_frames=4)


def _scroll_batch(rng, b=16, size=16):
    """A random texture that scrolls one pixel right (action 1) or left (action 0) each step."""
    tex = rng.random((b, size, size + 8))
    a = rng.integers(0, 2, b)
    frames = []
    for t in range(3):
        off = 4 + np.where(a == 1, -t, t)  # moving right: the window over the texture slides left
        frames.append(np.stack([tex[i, :, off[i]:off[i] + size] for i in range(b)]))
    obs = (np.stack(frames, 1) * 255).round().astype(np.uint8)[..., None]
    action = np.stack([a, a, np.full(b, -1)], 1)[..., None]
    return {"obs": torch.as_tensor(obs), "action": torch.as_tensor(action)}


def test_flow_decoder_learns_an_action_dependent_scroll():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _skip_model(flow=True)
    _fit(model, lambda: _scroll_batch(rng), "pixel_mse", steps=150)
    test = _scroll_batch(np.random.default_rng(1), b=64)
    with torch.no_grad():
        out = model.eval()(test)
    err = float((out["pred"].clamp(0, 1) - out["target"]).pow(2)[:, 1].mean())  # step 1: two frames of context
    copy = float((out["target"][:, 0] - out["target"][:, 1]).pow(2).mean())
    assert err < 0.25 * copy, (err, copy)
