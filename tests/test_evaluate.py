"""Rollout evaluation: image metrics against known values, open-loop feedback, files on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from wm_framework.stages.evaluate.metrics import mse, psnr, ssim, validation_metrics
from wm_framework.stages.evaluate.rollout import evaluate_rollouts
from wm_framework.model import ActionSpec, WorldModel

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- metrics
def test_mse_and_psnr_known_values():
    pred = torch.full((2, 1, 8, 8), 0.5)
    target = torch.full((2, 1, 8, 8), 0.6)
    assert torch.allclose(mse(pred, target), torch.tensor([0.01, 0.01]), atol=1e-7)
    assert torch.allclose(psnr(pred, target), torch.tensor([20.0, 20.0]), atol=1e-4)  # 10 log10(1/0.01)
    assert float(psnr(target, target)[0]) == pytest.approx(100.0)  # clamped, not inf


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1) written out with scipy, one channel."""
    from scipy.ndimage import gaussian_filter

    def f(a):
        return gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")

    ux, uy = f(x), f(y)
    vx, vy, vxy = f(x * x) - ux * ux, f(y * y) - uy * uy, f(x * y) - ux * uy
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = 5  # skimage crops (win_size - 1) // 2 before averaging
    return float(s[pad:-pad, pad:-pad].mean())


def test_ssim_matches_skimage_formula():
    rng = np.random.default_rng(0)
    x = rng.random((32, 40))
    y = np.clip(x + 0.1 * rng.standard_normal((32, 40)), 0, 1)
    ours = float(ssim(torch.tensor(y)[None, None], torch.tensor(x)[None, None])[0])
    assert ours == pytest.approx(_ssim_reference(y, x), abs=1e-6)
    assert 0.2 < ours < 0.99


def test_ssim_known_values():
    a = torch.rand(3, 2, 20, 20)
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-6)
    # Two constant images: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    x, y = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.7)
    c1 = 0.01**2
    assert float(ssim(x, y)[0]) == pytest.approx((2 * 0.2 * 0.7 + c1) / (0.04 + 0.49 + c1), abs=1e-6)
    # Anti-correlated structure scores below zero.
    assert float(ssim(a[:1], 1 - a[:1])[0]) < 0


def test_validation_metrics_uses_next_obs_and_skips_latent_models():
    pred = torch.full((2, 3, 1 * 12 * 12), 0.5)
    out = {"pred": pred, "target": pred + 0.1}
    frames = SimpleNamespace(next_obs=lambda p: p.view(p.shape[0], 1, 12, 12))
    m = validation_metrics(out, SimpleNamespace(predictor=frames))
    assert m["val_mse"] == pytest.approx(0.01, rel=1e-4)
    assert m["val_psnr"] == pytest.approx(20.0, abs=1e-3)
    assert validation_metrics(out, SimpleNamespace(predictor=nn.Identity())) == {}


# ----------------------------------------------------------------------------- toy models
class FlattenEncoder(nn.Module):
    """z_t = the frame itself, flattened (so predictions can be decoded back exactly)."""

    def __init__(self, shape=(1, 8, 8)):
        super().__init__()
        self.shape = shape
        self.out_dim = int(np.prod(shape))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, obs):
        return obs.flatten(2)


class HalvingPredictor(nn.Module):
    """Predicts next frame = half the current one: the output depends on its input, so a
    rollout that fed back the ground truth would score differently from one fed its own output."""

    history = 1

    def __init__(self, shape=(1, 8, 8), pixels=True):
        super().__init__()
        self.shape = shape
        if pixels:
            self.next_obs = lambda p: p.view(p.shape[0], *self.shape)

    def forward(self, z, a):
        return z * 0.5


def _constant_batches(n=4, length=12, value=1.0):
    obs = np.full((n, length, 8, 8, 1), int(255 * value), np.uint8)
    action = np.zeros((n, length, 1), np.int64)
    action[:, -1] = -1  # padding after the last frame, as the store has it
    return [{"obs": obs, "action": action}]


def test_rollout_is_open_loop_for_pixel_models():
    model = WorldModel(FlattenEncoder(), HalvingPredictor(), ActionSpec("discrete", 3, 1))
    res = evaluate_rollouts(model, _constant_batches(), horizons=(1, 2, 5, 10), context=1)
    assert res.space == "pixels" and res.n_rollouts == 4
    for h in (1, 2, 5, 10):
        # Fed back: frame h = 0.5^h. Teacher forcing would give 0.5 at every horizon.
        assert res.metrics["model"][h]["mse"] == pytest.approx((1 - 0.5**h) ** 2, rel=1e-5)
        assert res.metrics["copy_last"][h]["mse"] == pytest.approx(0.0, abs=1e-12)
    assert res.curve["model"][2] == pytest.approx((1 - 0.5**3) ** 2, rel=1e-5)
    assert res.metrics["model"][1]["psnr"] == pytest.approx(10 * math.log10(1 / 0.25), rel=1e-4)
    assert not any(res.beats_baseline().values())
    assert res.samples_pred.shape == (2, 11, 8, 8, 1)
    assert res.samples_pred[0, 1, 0, 0, 0] == 128 and res.samples_pred[0, 2, 0, 0, 0] == 64


def test_rollout_latent_models_score_latents():
    model = WorldModel(FlattenEncoder(), HalvingPredictor(pixels=False), ActionSpec("discrete", 3, 1))
    res = evaluate_rollouts(model, _constant_batches(), horizons=(1, 3), context=1)
    assert res.space == "latent"
    assert res.metrics["model"][3]["latent_mse"] == pytest.approx((1 - 0.5**3) ** 2, rel=1e-5)
    assert res.metric_names() == ["latent_mse"]


def test_rollout_rejects_short_windows():
    from wm_framework.errors import WMUsageError

    model = WorldModel(FlattenEncoder(), HalvingPredictor(), ActionSpec("discrete", 3, 1))
    with pytest.raises(WMUsageError, match="needs 33"):
        evaluate_rollouts(model, _constant_batches(length=12), horizons=(32,), context=1)


# ----------------------------------------------------------------------------- files
def test_result_files_plot_and_video(tmp_path: Path):
    import imageio.v3 as iio3

    from wm_framework.stages.evaluate.plots import plot_error_vs_horizon
    from wm_framework.stages.evaluate.video import write_side_by_side

    model = WorldModel(FlattenEncoder(), HalvingPredictor(), ActionSpec("discrete", 3, 1))
    res = evaluate_rollouts(model, _constant_batches(), horizons=(1, 5), context=1)
    paths = res.write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["metrics"]["model"]["5"]["mse"] == pytest.approx((1 - 0.5**5) ** 2, rel=1e-5)
    lines = paths["csv"].read_text().strip().splitlines()
    assert lines[0].startswith("horizon,model_mse,model_psnr,model_ssim,copy_last_mse") and len(lines) == 3

    png = plot_error_vs_horizon(res.curve, tmp_path / "plots" / "mse.png", marks=res.horizons)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rng = np.random.default_rng(0)
    true = rng.integers(0, 255, (9, 21, 21, 1), dtype=np.uint8)  # odd size: padded to even for H.264
    vids = write_side_by_side(true, true[::-1].copy(), tmp_path / "videos" / "clip", marker_from=3)
    video = iio3.imread(vids["mp4"], plugin="pyav", index=None)  # decode every frame back
    n, h, w = video.shape[:3]
    assert n == 9
    assert w % 2 == 0 and h % 2 == 0 and w > 2 * h
    assert h == 148  # 21 px frames shown about 128 px tall: scale 7, padded to even
    assert iio3.imread(vids["gif"], index=None).shape[0] == 9


# ----------------------------------------------------------------------------- stage
class FakeSampler:
    def __init__(self, batches):
        self.obs = np.concatenate([b["obs"] for b in batches])
        self.action = np.concatenate([b["action"] for b in batches])

    def __len__(self):
        return len(self.obs)

    def get(self, idx):
        return {"obs": self.obs[idx], "action": self.action[idx]}


class FakeContext:
    """The RunContext surface the eval stage uses."""

    def __init__(self, path: Path, model):
        self.path, self.model, self.device = path, model, torch.device("cpu")
        self.results, self.sections, self.asked = {}, {}, []

    def load_model(self, checkpoint="last", device=None):
        return self.model

    def sampler(self, split, length=None):
        self.asked.append((split, length))
        return FakeSampler(_constant_batches(n=5, length=length))

    def update_results(self, key, value):
        self.results[key] = json.loads(json.dumps(value))  # must be JSON-serialisable

    def write_report_section(self, key, title, markdown):
        self.sections[key] = markdown

    @property
    def plots_dir(self):
        (self.path / "plots").mkdir(exist_ok=True)
        return self.path / "plots"

    @property
    def videos_dir(self):
        (self.path / "videos").mkdir(exist_ok=True)
        return self.path / "videos"


def test_eval_stage_writes_results_report_plot_and_videos(tmp_path: Path):
    from wm_framework.stages.evaluate.stage import eval_stage

    model = WorldModel(FlattenEncoder(), HalvingPredictor(), ActionSpec("discrete", 3, 1))
    ctx = FakeContext(tmp_path, model)
    ref = {"label": "published", "mse": 0.5, "psnr": 1.0, "ssim": 0.99, "horizon_mse": {"4": 1e-6}}
    eval_stage(horizons=[4, 1], episodes=3, videos=1, reference=ref)(ctx)
    assert ctx.asked == [("test", 5)]  # context 1 + horizon 4
    r = ctx.results["eval"]
    assert r["n_rollouts"] == 3 and r["horizons"] == [1, 4]
    assert r["reference"]["mse@1"] == {"reference": 0.5, "ours": pytest.approx(0.25, rel=1e-5), "better": True}
    assert r["reference"]["mse@4"]["better"] is False
    assert (tmp_path / r["files"]["plot"]).is_file() and (tmp_path / "rollout_metrics.csv").is_file()
    assert len(r["videos"]) == 1 and (tmp_path / r["videos"][0]["mp4"]).is_file()
    md = ctx.sections["eval"]
    assert "does **not** beat the copy-last-frame baseline" in md
    assert "| mse@1 | 0.50000 | 0.25000 | yes |" in md and "mse@1, psnr@1 only (2 of 4)" in md


def test_parse_horizons():
    from wm_framework.commands.eval import parse_horizons
    from wm_framework.errors import WMUsageError

    assert parse_horizons("1, 5,10") == [1, 5, 10]
    with pytest.raises(WMUsageError):
        parse_horizons("1,x")
    with pytest.raises(WMUsageError):
        parse_horizons("0")


# ----------------------------------------------------------------------------- error breakdown
def test_breakdown_splits_error_by_region_and_motion_and_draws_a_map(tmp_path: Path):
    from wm_framework.stages.evaluate.breakdown import REST, ErrorBreakdown

    bd = ErrorBreakdown([1, 4], regions={"centre": [0.25, 0.75, 0.25, 0.75]})
    last = torch.zeros(2, 1, 8, 8)
    true = torch.zeros(2, 1, 8, 8)
    true[1] = 1.0  # rollout 1: the whole scene changed (moving); rollout 0: still
    pred = true.clone()
    pred[:, :, 2:6, 2:6] += 0.5  # the model is wrong only in the centre box (16 of 64 pixels)
    for h in (1, 4):
        bd.add(h, pred.clamp(0, 1), true, last)
    g = bd.to_json()["groups"]
    assert g["region: centre"]["1"]["model"] == pytest.approx((0.25 + 0.0) / 2)  # clamped: 1.5 -> 1 is exact
    assert g[f"region: {REST}"]["1"]["model"] == pytest.approx(0.0)
    assert g["motion: still"]["1"] == {"model": pytest.approx(0.25 * 16 / 64), "copy_last": 0.0, "n": 1}
    assert g["motion: moving"]["4"]["copy_last"] == pytest.approx(1.0) and g["motion: moving"]["4"]["n"] == 1
    assert bd.n == 2
    assert "| region: centre | 0.12500 / 0.50000 | 0.12500 / 0.50000 |" in bd.markdown()
    assert "| motion: still | 0.06250 / 0.00000 (n=1) |" in bd.markdown()
    png = bd.plot(tmp_path / "plots" / "error_map.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_region_is_a_config_error():
    from pydantic import ValidationError

    from wm_framework.stages.evaluate.stage import EvalConfig

    with pytest.raises(ValidationError, match="top < bottom"):
        EvalConfig(regions={"player": [0.6, 0.4, 0.4, 0.6]})


def test_eval_stage_reports_the_breakdown(tmp_path: Path):
    from wm_framework.stages.evaluate.stage import eval_stage

    model = WorldModel(FlattenEncoder(), HalvingPredictor(), ActionSpec("discrete", 3, 1))
    ctx = FakeContext(tmp_path, model)
    eval_stage(horizons=[1, 2], episodes=3, video=False, regions={"player": [0.4, 0.6, 0.4, 0.6]})(ctx)
    r = ctx.results["eval"]
    assert set(r["breakdown"]["groups"]) == {"motion: still", "motion: moving", "region: player", "region: rest of frame"}
    assert r["breakdown"]["groups"]["region: player"]["1"]["model"] == pytest.approx(0.25, rel=1e-5)
    assert (tmp_path / r["files"]["error_map"]).is_file()
    assert "**Where the error is**" in ctx.sections["eval"]
