"""LeWM losses: SIGReg's statistic against a direct integral, its behaviour on good and
collapsed embeddings, latent MSE, one real optimiser step, and the shipped recipe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate

import wm_framework
from wm_framework.model import ActionSpec, WorldModel
from wm_framework.plugins import reset_registry
from wm_plugins.lewm.sigreg import random_directions, sigreg_statistic, trapezoid_weights

torch.set_num_threads(1)
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "lewm_breakout.toml"


@pytest.fixture(scope="module", autouse=True)
def fresh_registry():
    reset_registry()
    yield
    reset_registry()


def stat(z, num_directions=512, knots=17, seed=0):
    """SIGReg of a [N, D] batch with the released defaults (t in [0, 3])."""
    torch.manual_seed(seed)
    return float(sigreg_statistic(z, random_directions(z.shape[1], num_directions), torch.linspace(0, 3, knots)))


# --------------------------------------------------------------------------- the statistic
def test_trapezoid_weights_are_doubled_trapezoid():
    w = trapezoid_weights(torch.linspace(0, 3, 17))
    dt = 3 / 16
    assert w[0] == pytest.approx(dt) and w[-1] == pytest.approx(dt)
    assert torch.allclose(w[1:-1], torch.full((15,), 2 * dt))
    assert float(w.sum()) == pytest.approx(6.0)  # integrates 1 over [-3, 3]


def test_statistic_matches_a_direct_numerical_integral_in_1d():
    rng = np.random.default_rng(0)
    h = rng.normal(0.3, 1.4, size=40)  # a visibly non-standard sample

    def integrand(t):
        err = (np.cos(t * h).mean() - math.exp(-t * t / 2)) ** 2 + np.sin(t * h).mean() ** 2
        return err * math.exp(-t * t / 2)

    direct = len(h) * integrate.quad(integrand, -3.0, 3.0, limit=200)[0]
    z = torch.tensor(h, dtype=torch.float64).unsqueeze(1)
    one = torch.ones(1, 1, dtype=torch.float64)
    fine = float(sigreg_statistic(z, one, torch.linspace(0, 3, 2001, dtype=torch.float64)))
    coarse = float(sigreg_statistic(z, one, torch.linspace(0, 3, 17, dtype=torch.float64)))
    assert fine == pytest.approx(direct, rel=1e-5)
    assert coarse == pytest.approx(direct, rel=0.05)  # the 17 released knots are a fair quadrature


def test_standard_normal_scores_its_expected_value():
    """For iid N(0,1) data E[stat] = integral (1 - e^{-t^2}) e^{-t^2/2} dt over [-3, 3], whatever N."""
    expected = integrate.quad(lambda t: (1 - math.exp(-t * t)) * math.exp(-t * t / 2), -3, 3)[0]
    torch.manual_seed(0)
    for n in (64, 512):
        values = [stat(torch.randn(n, 32), seed=s) for s in range(4)]
        assert np.mean(values) == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize("name,transform,min_ratio", [
    ("collapsed", lambda z: 0.01 * z, 50),
    ("shifted", lambda z: z + 2.0, 50),
    ("scaled up", lambda z: 3.0 * z, 20),
    ("low rank", lambda z: z[:, :1].expand(-1, z.shape[1]) * math.sqrt(1 / z.shape[1]) * 3, 10),
])
def test_non_gaussian_embeddings_score_far_higher(name, transform, min_ratio):
    torch.manual_seed(1)
    z = torch.randn(512, 32)
    good = stat(z)
    bad = stat(transform(z))
    assert good < 2.0
    assert bad > min_ratio * good, f"{name}: {bad:.2f} vs {good:.2f}"


def test_statistic_has_finite_gradients_that_undo_collapse():
    torch.manual_seed(0)
    z = (0.1 * torch.randn(256, 16)).requires_grad_()
    before = stat(z.detach())
    s = sigreg_statistic(z, random_directions(16, 256), torch.linspace(0, 3, 17))
    s.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    after = stat((z - 0.05 * z.grad / z.grad.norm(dim=1, keepdim=True).mean()).detach())
    assert after < before


# --------------------------------------------------------------------------- the loss terms
def test_sigreg_loss_scores_each_time_step_and_folds_in_lambda():
    loss = wm_framework.create("losses", "sigreg", num_directions=256, lam=0.09)
    torch.manual_seed(0)
    z = torch.randn(128, 3, 16)
    z[:, 2] *= 0.01  # only the last frame collapses
    torch.manual_seed(5)
    value = loss({"z": z}, {})
    torch.manual_seed(5)
    dirs = random_directions(16, 256)
    per_step = [float(sigreg_statistic(z[:, t], dirs, torch.linspace(0, 3, 17))) for t in range(3)]
    assert float(value) == pytest.approx(0.09 * np.mean(per_step), rel=1e-5)
    assert per_step[2] > 20 * max(per_step[:2])


def test_sigreg_loss_uses_the_global_rng():
    loss = wm_framework.create("losses", "sigreg", num_directions=8)
    z = torch.randn(64, 2, 16)
    torch.manual_seed(3)
    a = float(loss({"z": z}, {}))
    torch.manual_seed(3)
    assert float(loss({"z": z}, {})) == a
    assert float(loss({"z": z}, {})) != a  # fresh directions on every call


def test_sigreg_gather_hook_sees_the_global_batch():
    local, remote = torch.randn(32, 2, 8), torch.randn(32, 2, 8)
    gathered = wm_framework.create("losses", "sigreg", num_directions=64)
    gathered.gather = lambda z: torch.cat([z, remote])
    plain = wm_framework.create("losses", "sigreg", num_directions=64)
    torch.manual_seed(0)
    a = gathered({"z": local}, {})
    torch.manual_seed(0)
    b = plain({"z": torch.cat([local, remote])}, {})
    torch.testing.assert_close(a, b)


def test_sigreg_ignores_bf16_autocast():
    loss = wm_framework.create("losses", "sigreg", num_directions=64)
    z = torch.randn(64, 2, 16)
    torch.manual_seed(0)
    ref = loss({"z": z}, {})
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss({"z": z}, {})
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ref)


def test_latent_mse_is_plain_mse_and_does_not_detach_the_target():
    loss = wm_framework.create("losses", "latent_mse")
    pred, target = torch.randn(4, 3, 8, requires_grad=True), torch.randn(4, 3, 8, requires_grad=True)
    value = loss({"pred": pred, "target": target}, {})
    assert value.item() == pytest.approx(((pred - target) ** 2).mean().item())
    value.backward()
    assert target.grad is not None and target.grad.abs().sum() > 0  # end to end: no stop-gradient
    with pytest.raises(ValueError, match="shape"):
        loss({"pred": pred, "target": target[:, :2]}, {})


# --------------------------------------------------------------------------- end to end
def small_world_model():
    torch.manual_seed(0)
    enc = wm_framework.create("encoders", "vit", image_size=16, patch_size=8, width=32, depth=1, heads=2,
                              projector_hidden=64, obs_shape=(3, 20, 20))
    pred = wm_framework.create("predictors", "ar_transformer", latent_dim=enc.out_dim, action_dim=4 * 5, history=3,
                               depth=1, heads=2, head_dim=8, mlp_dim=64, dropout=0.0, projector_hidden=64)
    return WorldModel(enc, pred, ActionSpec("discrete", 4, frameskip=5))


def test_one_optimiser_step_lowers_the_lewm_loss():
    model = small_world_model().train()
    rng = np.random.default_rng(0)
    batch = {"obs": torch.from_numpy(rng.integers(0, 256, (16, 4, 20, 20, 3), dtype=np.uint8)),
             "action": torch.from_numpy(rng.integers(0, 4, (16, 4, 5)))}
    batch["action"][:, -1] = -1  # padding past the window's end, as the sampler stores it
    losses = [wm_framework.create("losses", "latent_mse"), wm_framework.create("losses", "sigreg", num_directions=128)]

    def total():
        torch.manual_seed(123)  # the same SIGReg directions for both evaluations
        out = model(batch)
        assert out["pred"].shape == out["target"].shape == (16, 3, 32)
        return sum(term(out, batch) for term in losses)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = total()
    before.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert model.encoder.backbone.patch_embed.weight.grad.abs().sum() > 0  # the encoder trains end to end
    opt.step()
    with torch.no_grad():
        after = total()
    assert after.item() < before.item()


def test_rollout_through_the_core_world_model():
    model = small_world_model().eval()
    out = model.rollout(torch.rand(2, 3, 3, 20, 20), torch.rand(2, 3 - 1 + 5, 20))
    assert out["latents"].shape == (2, 5, 32) and torch.isfinite(out["latents"]).all()


# --------------------------------------------------------------------------- the recipe
def test_recipe_model_tables_build_and_smoke_sizes_run():
    from wm_framework import recipe as recipes

    data = recipes.load_toml(RECIPE)
    assert data["train"]["lr"] == 5e-5 and data["train"]["batch_size"] == 128
    assert data["model"]["losses"]["sigreg"]["lam"] == 0.09
    for smoke in (False, True):
        resolved = recipes.resolve(data, smoke=smoke)
        rec = recipes.validate(resolved, check_components=False)  # other sections are other plugins'
        model = rec.model
        enc_params = {k: v for k, v in model.encoder.items() if k != "type"}
        pred_params = {k: v for k, v in model.predictor.items() if k != "type"}
        size = resolved["data"]["collect"]["env"]["obs_size"]
        history = rec.data.window - 1
        build = torch.device("meta") if not smoke else torch.device("cpu")
        with build:
            enc = wm_framework.create("encoders", model.encoder["type"], obs_shape=(3, *size), **enc_params)
            pred = wm_framework.create("predictors", model.predictor["type"], latent_dim=enc.out_dim,
                                       action_dim=4 * rec.data.frameskip, history=history, **pred_params)
        for table in model.losses.values():
            wm_framework.create("losses", table["type"], **{k: v for k, v in table.items() if k not in ("type", "weight")})
        if smoke:
            assert rec.train.steps == 30 and size == [64, 64]
            z = enc(torch.rand(2, rec.data.window, 3, *size))
            assert pred(z[:, :-1], torch.rand(2, history, 4 * rec.data.frameskip)).shape == (2, history, enc.out_dim)
        else:
            assert enc.out_dim == 192 and rec.train.epochs == 100
