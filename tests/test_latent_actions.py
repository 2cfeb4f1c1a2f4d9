"""Latent action model: quantiser (straight-through, EMA, dead-code restarts), networks, end to end on Breakout."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wm_plugins.latent_actions.losses import make_action_to_latent_ce, make_latent_action_metrics, make_vq_recon
from wm_plugins.latent_actions.model import EXTRAS, make_frames_encoder, make_latent_action_vqvae, split_prediction
from wm_plugins.latent_actions.networks import ConcatIDM, CrossAttentionIDM
from wm_plugins.latent_actions.quantizer import VectorQuantizer, code_statistics
from wm_plugins.latent_actions.report import metric_curve, plot_codebook_entropy, read_metrics
from wm_plugins.latent_actions.scoring import ball_box_error, code_usage

ROOT = Path(__file__).resolve().parents[1]


def _ensure_plugin():
    """Register the plugin by hand until its entry point is in pyproject.toml."""
    from wm_framework.plugins import get_plugin_manager

    pm = get_plugin_manager()
    if "latent_actions" not in pm.plugins:
        import wm_plugins.latent_actions as module

        pm.register_module(module, "latent_actions")


# ----------------------------------------------------------------------------- quantiser
def test_straight_through_gradient_is_identity_and_forward_is_the_code():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, ema=False).eval()
    z_e = torch.randn(16, 4, requires_grad=True)
    q = vq(z_e)
    assert torch.allclose(q["z_q"], vq.codebook[q["codes"]].detach())
    w = torch.randn(16, 4)
    (q["z_q"] * w).sum().backward()
    assert torch.allclose(z_e.grad, w)  # the backward pass skips the (non-differentiable) argmin
    # the codebook loss moves the chosen codes only, the commitment loss only the encoder
    z_e.grad = None
    q = vq(z_e)
    q["codebook_err"].sum().backward()
    assert z_e.grad is None or torch.all(z_e.grad == 0)
    used = torch.zeros(8, dtype=torch.bool)
    used[q["codes"]] = True
    assert torch.all(vq.codebook.grad[~used] == 0) and torch.any(vq.codebook.grad[used] != 0)


def test_ema_update_matches_hand_computation():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(3, 2, ema=True, decay=decay, eps=eps).train()
    init = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vq.codebook.copy_(torch.tensor(init, dtype=torch.float32))
    vq.ema_sum.copy_(torch.tensor(init, dtype=torch.float32))
    z = np.array([[1.0, 1.0], [-1.0, 1.0], [9.0, 1.0]])  # two points -> code 0, one -> code 1, none -> code 2
    q = vq(torch.tensor(z, dtype=torch.float32))
    assert q["codes"].tolist() == [0, 0, 1]
    counts = np.array([2.0, 1.0, 0.0])
    sums = np.array([[0.0, 2.0], [9.0, 1.0], [0.0, 0.0]])
    n = decay * np.ones(3) + (1 - decay) * counts
    s = decay * init + (1 - decay) * sums
    smoothed = (n + eps) / (n.sum() + 3 * eps) * n.sum()
    expected = s / smoothed[:, None]
    np.testing.assert_allclose(vq.codebook.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.ema_count.numpy(), n, rtol=1e-6)
    assert abs(expected[2, 1] - 10.0) < 1e-3  # an unused code keeps (about) its vector
    before = vq.codebook.clone()
    vq.eval()(torch.tensor(z, dtype=torch.float32))
    assert torch.equal(vq.codebook, before)  # no update outside training


def _usage_after_training(restart: bool) -> int:
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 2, ema=True, decay=0.9, dead_code_restart=restart, dead_after=3).train()
    collapsed = torch.full((16, 2), 5.0)  # every code identical, off the data: all inputs pick code 0
    vq.codebook.copy_(collapsed)
    vq.ema_sum.copy_(collapsed)
    centres = torch.tensor([[3.0 * np.cos(a), 3.0 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    for _ in range(60):
        x = centres[torch.randint(0, 8, (64,))] + 0.05 * torch.randn(64, 2)
        vq(x)
    x = centres.repeat_interleave(16, 0) + 0.05 * torch.randn(128, 2)
    return int(code_statistics(vq.eval()(x)["codes"], 16)["codes_used"])


def test_dead_code_restarts_lift_a_collapsed_codebook():
    assert _usage_after_training(restart=False) == 1
    assert _usage_after_training(restart=True) >= 6  # most of the 8 clusters get a code of their own


def test_action_to_latent_beats_chance_when_actions_determine_codes():
    torch.manual_seed(0)
    n_actions, k = 4, 16
    model = make_latent_action_vqvae(codebook_size=k, width=16, code_dim=8, action_history=2, action_dim=n_actions,
                                     obs_shape=(1, 16, 16))
    table = torch.tensor([3, 7, 11, 5])  # the code each action causes
    opt = torch.optim.Adam(model.action_to_latent.parameters(), lr=1e-2)

    def batch(n=64):
        a = torch.randint(0, n_actions, (n, 3))
        return F.one_hot(a, n_actions).float(), table[a]

    for _ in range(150):
        act, codes = batch()
        loss = F.cross_entropy(model.action_logits(act).flatten(0, 1), codes.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    act, codes = batch(512)
    acc = (model.action_logits(act).argmax(-1) == codes).float().mean().item()
    assert acc > 0.95 > 1 / n_actions


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [(64, 64), (84, 84)])
def test_inverse_dynamics_encoders_shapes(size):
    torch.manual_seed(0)
    a, b = torch.rand(5, 1, *size), torch.rand(5, 1, *size)
    for idm in (CrossAttentionIDM(1, size, code_dim=12, width=16, heads=2, layers=1), ConcatIDM(1, size, code_dim=12, width=16)):
        z = idm(a, b)
        assert z.shape == (5, 12)
        assert not torch.allclose(idm(a, a), idm(a, b))  # the next frame matters


@pytest.mark.parametrize("idm", ["cross_attention", "concat"])
def test_predictor_output_layout_losses_and_rollout(idm):
    torch.manual_seed(0)
    from wm_framework.model import ActionSpec, WorldModel

    enc = make_frames_encoder(obs_shape=(1, 32, 32))
    pred = make_latent_action_vqvae(idm=idm, codebook_size=8, code_dim=8, width=16, heads=2, attn_layers=1,
                                    latent_dim=enc.out_dim, action_dim=4, obs_shape=(1, 32, 32))
    wm = WorldModel(enc, pred, ActionSpec("discrete", 4, 1)).train()
    batch = {"obs": torch.randint(0, 255, (3, 6, 32, 32, 1), dtype=torch.uint8), "action": torch.randint(0, 4, (3, 6, 1))}
    out = wm(batch)
    assert out["pred"].shape == (3, 5, 32 * 32 + len(EXTRAS)) and out["target"].shape == (3, 5, 32 * 32)
    frames, ex = split_prediction(out["pred"])
    assert ex["from_action"][:, -1].eq(1).all() and ex["from_action"][:, :-1].eq(0).all()
    assert frames.min() >= 0 and frames.max() <= 1
    terms = make_vq_recon()(out, batch)
    assert set(terms) == {"recon", "codebook", "commitment"}
    (sum(terms.values()) + make_action_to_latent_ce()(out, batch)).backward()
    assert pred.idm.head.weight.grad.abs().sum() > 0  # straight-through reaches the inverse-dynamics encoder
    assert pred.action_to_latent.net[0].weight.grad.abs().sum() > 0
    stats = make_latent_action_metrics()(out, batch)
    assert all(torch.isfinite(v) for v in stats.values()) and 0 < stats["usage"] <= 1
    wm.eval()
    ctx_obs = batch["obs"][:1, :4].permute(0, 1, 4, 2, 3).float() / 255
    roll = wm.rollout(ctx_obs, F.one_hot(torch.randint(0, 4, (1, 6)), 4).float())
    assert roll["obs"].shape == (1, 3, 1, 32, 32)


# ----------------------------------------------------------------------------- report helpers
def test_ball_box_error_and_entropy_plot(tmp_path):
    pred, target = np.zeros((2, 1, 10, 10)), np.zeros((2, 1, 10, 10))
    target[0, 0, 5, 5] = 1.0  # a ball the prediction lost
    err = ball_box_error(pred, target, np.array([5.0, np.nan]), np.array([5.0, 1.0]), radius=1)
    assert err[0] == pytest.approx(1 / 9) and np.isnan(err[1])
    for name, vals in (("ema", [2.0, 2.1, 2.2]), ("grad", [2.0, 1.0, 0.1])):
        (tmp_path / name).mkdir()
        lines = [json.dumps({"step": i, "train/stats/entropy": v}) for i, v in enumerate(vals)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines + ['{"step": 3, "val/loss": 1.0}']))
    steps, vals = metric_curve(read_metrics(tmp_path / "grad"), "train/stats/entropy")
    assert steps.tolist() == [0, 1, 2] and vals[-1] == pytest.approx(0.1)
    out = plot_codebook_entropy({"ema": tmp_path / "ema", "grad": tmp_path / "grad"}, tmp_path / "e.png",
                                ema={"ema": True, "grad": False})
    assert out is not None and out.stat().st_size > 1000
    assert plot_codebook_entropy({"x": tmp_path / "missing"}, tmp_path / "none.png") is None


def test_code_usage_counts_codes_over_all_transitions():
    u = code_usage(np.array([0, 0, 1, 3]), 8)
    assert u["codes_used"] == 3 and u["usage"] == pytest.approx(3 / 8)
    assert u["perplexity"] == pytest.approx(np.exp(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))))
    assert code_usage(np.zeros(5, int), 4) == {"codes_used": 1, "usage": 0.25, "entropy": 0.0, "perplexity": 1.0}


def test_residual_decoder_copies_frame_t_at_init_and_stays_in_range():
    from wm_plugins.latent_actions.networks import CodeConditionedDecoder

    torch.manual_seed(0)
    frames = torch.rand(3, 4, 16, 16)  # k=4 frames of 1 channel; frame t is the last
    dec = CodeConditionedDecoder(1, (16, 16), 4, 8, width=16, n_down=2)
    out = dec(frames, torch.randn(3, 8))
    assert torch.equal(out, frames[:, -1:])  # an untrained residual decoder predicts "no change"
    with torch.no_grad():
        dec.out.bias.fill_(5.0)
    out = dec(frames, torch.randn(3, 8))
    assert out.min() >= 0 and out.max() <= 1  # clamped forward ...
    out.sum().backward()
    assert dec.out.bias.grad.abs().sum() > 0  # ... with the gradient still flowing
    whole = CodeConditionedDecoder(1, (16, 16), 4, 8, width=16, n_down=2, residual=False)
    assert not torch.allclose(whole(frames, torch.randn(3, 8)), frames[:, -1:])


def test_reconstruction_grid_writes_one_row_per_example(tmp_path):
    from wm_plugins.latent_actions.views import COLUMNS, grid_panels, write_grid

    rng = np.random.default_rng(0)
    shown = {k: rng.random((2, 1, 8, 8)) for k in ("frame_t", "frame_next", "recon", "from_action")}
    rows = grid_panels(shown)
    assert len(rows) == 2 and all(len(r) == len(COLUMNS) for r in rows) and rows[0][0].shape == (8, 8)
    out = write_grid(shown, tmp_path / "g.png", "run")
    assert out is not None and out.stat().st_size > 1000
    assert write_grid({}, tmp_path / "none.png") is None


# ----------------------------------------------------------------------------- end to end (real ALE, Zarr, trainer)
def test_recipe_end_to_end_on_breakout(tmp_path, monkeypatch):
    _ensure_plugin()
    from wm_framework.runs.run import run_recipe

    data = tomllib.loads((ROOT / "recipes" / "latent_actions_breakout.toml").read_text())
    data.pop("sweep")
    data["stages"] = ["data", "train", "latent_actions_report"]
    recipe = tmp_path / "la.toml"
    import tomli_w

    recipe.write_text(tomli_w.dumps(data))
    monkeypatch.chdir(tmp_path)
    run = run_recipe(str(recipe), ["data.collect.max_steps=50", "train.steps=6", "train.eval_every=3",
                                   "train.log_every=2", "train.checkpoint_every=6"], smoke=True, out=str(tmp_path / "runs"),
                     progress=False)
    records = read_metrics(run)
    assert any("train/stats/entropy" in r for r in records) and any("val/vq/recon" in r for r in records)
    assert any("train/stats/a2l_accuracy" in r for r in records)
    res = json.loads((run / "results.json").read_text())["latent_actions"]
    (row,) = res.values()
    assert row["ball_frames"] > 0 and row["ball_mse"] >= 0 and row["recon_mse"] > 0
    for key in ("shuffled_code_mse", "code_gain", "perplexity", "usage", "codes_used", "a2l_accuracy",
                "a2l_majority", "ze_dead_dims", "ball_peak", "action_recon_mse"):
        assert key in row, key
    assert 1 <= row["codes_used"] <= row["codebook_size"] and 0.0 < row["a2l_majority"] <= 1.0
    smoke = data["presets"]["smoke"].get("model.predictor.dead_code_restart", True)
    assert row["dead_code_restart"] is smoke  # the factory's default when the recipe is silent
    report = (run / "report.md").read_text()
    assert "## Latent actions" in report and "code gain" in report
    assert (run / "plots" / "codebook_entropy.png").is_file()
    grids = list((run / "plots").glob("reconstructions_*.png"))
    assert len(grids) == 1 and grids[0].name in report


def test_data_init_starts_codes_on_the_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, ema=True, data_init=True, init_scale=100.0).train()  # random codes far from the data
    x = torch.randn(256, 2) * 0.1
    vq(x)
    assert vq.codebook.abs().max() < 1.0  # moved onto the data
    assert int(code_statistics(vq.eval()(x)["codes"], 8)["codes_used"]) >= 6


def test_vq_warmup_passes_z_e_through_then_seeds_codes_from_it():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, ema=True, data_init=True, init_scale=100.0, warmup_steps=2).train()
    x = torch.randn(64, 2) * 0.1
    for _ in range(2):
        out = vq(x)
        assert torch.equal(out["z_q"], x) and float(out["commit_err"].sum()) == 0.0  # continuous, no commitment
    assert vq.codebook.abs().max() > 1.0  # not seeded yet
    out = vq(x)
    assert not torch.equal(out["z_q"], x)  # quantised from now on ...
    assert vq.codebook.abs().max() < 1.0  # ... with codes seeded on the data
    assert int(vq.forwards) == 3


def test_idm_output_is_standardised_over_the_batch_before_quantisation():
    """A near-constant IDM output (all transitions on one code) is spread to unit variance per dimension."""
    from wm_plugins.latent_actions.model import make_latent_action_vqvae

    torch.manual_seed(0)
    m = make_latent_action_vqvae(idm="concat", codebook_size=16, code_dim=4, width=16, n_down=2, context=2,
                                 obs_shape=(1, 16, 16), action_dim=4).train()
    frames = torch.rand(8, 3, 1, 16, 16)
    z_e = m.infer(frames).flatten(0, 1).detach()
    assert z_e.std(0).mean() == pytest.approx(1.0, abs=0.1) and z_e.mean(0).abs().max() < 1e-4
    plain = make_latent_action_vqvae(idm="concat", codebook_size=16, code_dim=4, width=16, n_down=2, context=2,
                                     obs_shape=(1, 16, 16), action_dim=4, standardize=False)
    assert isinstance(plain.standardize, torch.nn.Identity)


def test_change_weighted_reconstruction_weights_only_changed_pixels():
    from wm_plugins.latent_actions.losses import VQReconLoss
    from wm_plugins.latent_actions.model import EXTRAS

    frames = torch.zeros(1, 3, 4)  # [B, T, D]: 3 frames of 4 pixels
    frames[0, 2, 0] = 1.0  # pixel 0 changes between frame 1 and frame 2
    target = frames[:, 1:]
    pred_frames = torch.full((1, 2, 4), 0.5)  # the same error (0.25) on every pixel
    extras = torch.zeros(1, 2, len(EXTRAS))  # all positions inferred, no VQ errors
    out = {"pred": torch.cat([pred_frames, extras], -1), "target": target, "z": frames}
    plain = VQReconLoss()(out, {})["recon"]
    weighted = VQReconLoss(change_weight=3.0)(out, {})["recon"]
    assert plain == pytest.approx(0.25)
    # position 0 (frame 0 -> 1): nothing changes; position 1: pixel 0 weighs 1 + 3
    assert weighted == pytest.approx((0.25 + 0.25 * (4 + 1 + 1 + 1) / 4) / 2)
