"""LeWM plugin: the ViT encoder and the AdaLN-Zero predictor (shapes, counts, causality).

SIGReg and the losses are tested in test_lewm_losses.py. Everything here runs on CPU
in a few seconds: the full-size models are only built on the meta device (no memory,
no forward) to check their parameter counts against the released model's.
"""

from __future__ import annotations

import io

import pytest
import torch

import wm_framework
from wm_framework.errors import WMUsageError
from wm_framework.plugins import reset_registry

torch.set_num_threads(1)

SMALL_VIT = dict(image_size=32, patch_size=8, width=32, depth=2, heads=2, projector_hidden=64)
SMALL_PRED = dict(latent_dim=32, action_dim=20, history=3, depth=2, heads=4, head_dim=8, mlp_dim=64,
                  dropout=0.0, projector_hidden=64)


@pytest.fixture(scope="module", autouse=True)
def fresh_registry():
    reset_registry()
    yield
    reset_registry()


def assert_same(a, b):
    """Equal up to float noise, judged against the outputs' scale (they are ~1e-2 at init)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * float(b.detach().abs().max()))


def assert_moved(a, b):
    assert float((a - b).detach().abs().max()) > 1e-3 * float(b.detach().abs().max())


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_encoder(**kw):
    torch.manual_seed(0)
    return wm_framework.create("encoders", "vit", **{**SMALL_VIT, **kw}).eval()


def small_predictor(randomise_adaln: bool = False, loud_actions: bool = True, **kw):
    """A small predictor in eval mode; optionally with the action made influential.

    At init the action's path is faint twice over (small action-encoder weights, zero
    AdaLN). ``loud_actions`` enlarges the action encoder so a leak would be visible;
    ``randomise_adaln`` opens the AdaLN-Zero gates as training would.
    """
    torch.manual_seed(0)
    pred = wm_framework.create("predictors", "ar_transformer", **{**SMALL_PRED, **kw}).eval()
    if loud_actions:
        for layer in (pred.action_encoder.squeeze, pred.action_encoder.mlp[0], pred.action_encoder.mlp[2]):
            torch.nn.init.normal_(layer.weight, std=0.3)
    if randomise_adaln:
        for block in pred.blocks:
            torch.nn.init.normal_(block.adaln[1].weight, std=0.2)
            torch.nn.init.normal_(block.adaln[1].bias, std=0.2)
    return pred


# --------------------------------------------------------------------------- parameter counts
def test_reference_parameter_counts_are_exact():
    """REFERENCE §1: counted on the released model at 224 px / patch 14, 2-D actions, frameskip 5."""
    with torch.device("meta"):
        enc = wm_framework.create("encoders", "vit", preset="tiny", obs_shape=(3, 224, 224))
        pred = wm_framework.create("predictors", "ar_transformer", preset="lewm",
                                   latent_dim=enc.out_dim, action_dim=5 * 2, history=3)
    transformer = n_params(pred) - n_params(pred.action_encoder) - n_params(pred.projector)
    assert enc.out_dim == 192 and pred.history == 3
    assert n_params(enc.backbone) == 5_501_376
    assert n_params(enc.projector) == 792_768
    assert n_params(pred.action_encoder) == 156_206
    assert transformer == 10_791_360
    assert n_params(pred.projector) == 792_768
    assert n_params(enc) + n_params(pred) == 18_034_478


def test_presets_are_overridable_field_by_field():
    with torch.device("meta"):
        enc = wm_framework.create("encoders", "vit", preset="tiny", depth=2, image_size=64, patch_size=8)
    assert len(enc.backbone.blocks) == 2 and enc.backbone.num_patches == 64 and enc.out_dim == 192
    assert enc.backbone.blocks[0].mlp[0].out_features == 768  # mlp_ratio 4 kept from the preset


# --------------------------------------------------------------------------- registry / errors
def test_components_are_registered_with_their_params():
    names = {k: set(v) for k, v in wm_framework.components().items()}
    assert "vit" in names["encoders"] and "ar_transformer" in names["predictors"]
    assert {"latent_mse", "sigreg"} <= names["losses"]
    params = {p.name for p in wm_framework.components("encoders")["vit"].params()}
    assert {"preset", "pooling", "normalize", "obs_shape", "image_size"} <= params


@pytest.mark.parametrize("kind,name,params,match", [
    ("encoders", "vit", dict(obs_shape=(14,)), "obs_shape"),
    ("encoders", "vit", dict(preset="huge"), "preset"),
    ("encoders", "vit", dict(pooling="max"), "pooling"),
    ("encoders", "vit", dict(image_size=30, patch_size=8), "divisible"),
    ("encoders", "vit", dict(widht=64), "did you mean 'width'"),
    ("predictors", "ar_transformer", dict(history=0), "history"),
])
def test_bad_parameters_are_one_line_usage_errors(kind, name, params, match):
    with pytest.raises(WMUsageError, match=match):
        wm_framework.create(kind, name, **params)


# --------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_shapes_and_pooling(pooling):
    enc = small_encoder(pooling=pooling)
    obs = torch.rand(2, 3, 3, 32, 32)
    z, feats = enc(obs), enc.features(obs)
    assert z.shape == (2, 3, 32) and feats.shape == (2, 3, 32) and enc.out_dim == 32
    tokens = enc.backbone(enc._images(obs))
    expected = tokens[:, 0] if pooling == "cls" else tokens[:, 1:].mean(1)
    torch.testing.assert_close(feats.flatten(0, 1), expected)


def test_cls_and_mean_pooling_differ():
    obs = torch.rand(2, 2, 3, 32, 32)
    assert not torch.allclose(small_encoder(pooling="cls").features(obs), small_encoder(pooling="mean").features(obs))
    # Another pooling is asked for by argument (the probe's patch-mean baseline): the encoder is not changed.
    cls_enc, mean_enc = small_encoder(pooling="cls"), small_encoder(pooling="mean")
    torch.testing.assert_close(cls_enc.features(obs, pooling="mean"), mean_enc.features(obs))
    assert cls_enc.pooling == "cls" and "mean" in cls_enc.poolings
    with pytest.raises(ValueError, match="pooling"):
        cls_enc.features(obs, pooling="max")


def test_grayscale_input_equals_rgb_with_equal_channels():
    enc = small_encoder(obs_shape=(1, 32, 32))
    gray = torch.rand(2, 2, 1, 32, 32)
    torch.testing.assert_close(enc(gray), enc(gray.expand(-1, -1, 3, -1, -1)))


def test_frames_of_another_size_are_resized_on_the_fly():
    enc = small_encoder(obs_shape=(3, 50, 40))
    obs = torch.rand(1, 2, 3, 50, 40)
    resized = torch.nn.functional.interpolate(obs.flatten(0, 1), size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(enc(obs), enc(resized.view(1, 2, 3, 32, 32)))
    assert enc(obs).shape == (1, 2, 32)


def test_normalisation_is_applied_and_optional():
    obs = torch.rand(1, 1, 3, 32, 32)
    a, b = small_encoder(normalize=True), small_encoder(normalize=False)
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(obs), b(obs))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(a(obs), b((obs - mean.view(3, 1, 1)) / std.view(3, 1, 1)))


def test_frames_are_encoded_independently():
    enc = small_encoder()
    obs = torch.rand(2, 3, 3, 32, 32)
    z = enc(obs)  # eval mode: BatchNorm uses running stats, so no mixing across frames
    torch.testing.assert_close(z[:, 1], enc(obs[:, 1:2])[:, 0])


def test_encoder_state_dict_round_trip():
    enc, other = small_encoder(), small_encoder()
    torch.manual_seed(1)
    for p in other.parameters():
        torch.nn.init.normal_(p)
    buf = io.BytesIO()
    torch.save(enc.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    obs = torch.rand(1, 2, 3, 32, 32)
    torch.testing.assert_close(enc(obs), other(obs))


# --------------------------------------------------------------------------- predictor
def test_predictor_is_causal_in_latents_and_actions():
    pred = small_predictor(randomise_adaln=True)
    z, a = torch.randn(2, 3, 32), torch.rand(2, 3, 20)
    base = pred(z, a)
    z2, a2 = z.clone(), a.clone()
    z2[:, 2] += torch.randn(2, 32)  # not a constant shift: LayerNorm would remove that
    a2[:, 2] = torch.rand(2, 20)
    for zz, aa in ((z2, a), (z, a2)):
        out = pred(zz, aa)
        assert_same(out[:, :2], base[:, :2])  # the past cannot see the future
        assert_moved(out[:, 2], base[:, 2])  # but the changed step itself moves
    z3 = z.clone()
    z3[:, 0] += torch.randn(2, 32)
    assert_moved(pred(z3, a)[:, 2], base[:, 2])  # and later steps see the past


def test_adaln_zero_starts_independent_of_the_action():
    pred = small_predictor()
    assert all(not b.adaln[1].weight.any() and not b.adaln[1].bias.any() for b in pred.blocks)
    z = torch.randn(2, 3, 32)
    assert_same(pred(z, torch.rand(2, 3, 20)), pred(z, torch.rand(2, 3, 20)))
    moved = small_predictor(randomise_adaln=True)
    assert_moved(moved(z, torch.rand(2, 3, 20)), moved(z, torch.rand(2, 3, 20)))


def test_action_conditioning_is_per_time_step():
    """AdaLN modulates step t by a_t only: with one step, only its own action matters."""
    pred = small_predictor(randomise_adaln=True)
    z, a = torch.randn(1, 1, 32), torch.rand(1, 1, 20)
    assert_moved(pred(z, a), pred(z, a + 1.0))


def test_nan_actions_act_as_zero():
    pred = small_predictor(randomise_adaln=True)
    z, a = torch.randn(2, 3, 32), torch.rand(2, 3, 20)
    a[:, 0] = float("nan")
    zeroed = a.clone()
    zeroed[:, 0] = 0.0
    out = pred(z, a)
    assert torch.isfinite(out).all()
    assert_same(out, pred(z, zeroed))


def test_short_context_works_and_too_long_one_raises():
    pred = small_predictor(randomise_adaln=True)
    z, a = torch.randn(2, 3, 32), torch.rand(2, 3, 20)
    full = pred(z, a)
    assert_same(pred(z[:, :1], a[:, :1]), full[:, :1])  # rollout start: one frame
    with pytest.raises(ValueError, match="history=3"):
        pred(torch.randn(2, 4, 32), torch.rand(2, 4, 20))
    with pytest.raises(ValueError, match="width 20"):
        pred(z, torch.rand(2, 3, 7))


def test_dropout_is_active_in_training_only():
    pred = small_predictor(randomise_adaln=True, dropout=0.5)
    z, a = torch.randn(4, 3, 32), torch.rand(4, 3, 20)
    assert_same(pred(z, a), pred(z, a))
    pred.train()
    assert_moved(pred(z, a), pred(z, a))


# --------------------------------------------------------------------------- released vs single norms
def test_norm_styles_have_equal_parameter_counts_and_differ_in_function():
    from wm_plugins.lewm.factories import build_ar_transformer

    torch.manual_seed(0)
    released = build_ar_transformer(latent_dim=32, action_dim=4, history=3, depth=2, heads=2, head_dim=8, mlp_dim=64,
                                     dropout=0.0, projector=False)
    single = build_ar_transformer(latent_dim=32, action_dim=4, history=3, depth=2, heads=2, head_dim=8, mlp_dim=64,
                                  dropout=0.0, projector=False, norm_style="single")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(released) == count(single)
    block = released.blocks[0]
    # The released function: non-affine norm -> modulation -> the branch's own affine LayerNorm (eps 1e-5).
    assert not block.ln1.elementwise_affine and block.ln1.eps == 1e-6
    assert block.attn_norm.elementwise_affine and block.attn_norm.eps == 1e-5 and released.norm.eps == 1e-5
    assert single.blocks[0].ln1.elementwise_affine and single.norm.eps == 1e-6
    # With non-trivial affine parameters and modulation the two orders give different outputs.
    with torch.no_grad():
        for model in (released, single):
            for b in model.blocks:
                b.adaln[1].weight.normal_(0, 0.5)
                b.adaln[1].bias.normal_(0, 0.5)
        single.load_state_dict({k.replace("attn_norm", "ln1").replace("mlp_norm", "ln2"): v
                                for k, v in released.state_dict().items()}, strict=False)
        for model in (released, single):
            for name, p in model.named_parameters():
                if name.endswith(("ln1.weight", "ln2.weight", "attn_norm.weight", "mlp_norm.weight")):
                    p.fill_(2.0)
                if name.endswith(("ln1.bias", "ln2.bias", "attn_norm.bias", "mlp_norm.bias")):
                    p.fill_(0.5)
    released.eval(), single.eval()
    z, a = torch.randn(2, 3, 32), torch.randn(2, 3, 4)
    assert not torch.allclose(released(z, a), single(z, a), atol=1e-4)


def test_bad_norm_style_is_a_usage_error():
    from wm_framework.errors import WMUsageError
    from wm_plugins.lewm.factories import build_ar_transformer

    with pytest.raises(WMUsageError, match="norm_style"):
        build_ar_transformer(norm_style="double")


# --------------------------------------------------------------------------- encoder preprocessing
def test_max_resize_keeps_a_tiny_bright_object_that_bilinear_fades():
    from wm_plugins.lewm.vit import resize_frames

    x = torch.zeros(1, 1, 210, 160)
    x[..., 100:104, 80:82] = 1.0  # a 2x4 Breakout ball
    assert resize_frames(x, (64, 64), "max").max() == 1.0
    assert resize_frames(x, (64, 64), "bilinear").max() < 0.5
    assert 0 < resize_frames(x, (64, 64), "area").max() < 1.0


def test_crop_is_applied_before_the_resize_and_checked():
    enc = wm_framework.create("encoders", "vit", image_size=[16, 16], patch_size=8, width=32, depth=1, heads=2,
                              projector=False, normalize=False, crop=[32, 196, 8, 152], resize="max",
                              obs_shape=(1, 210, 160))
    frames = torch.zeros(1, 1, 1, 210, 160)
    frames[..., 10, 10] = 1.0  # in the score area: cropped away
    images = enc._images(frames)
    assert images.shape == (1, 3, 16, 16) and images.max() == 0.0
    frames[..., 100, 100] = 1.0  # inside the play field
    assert enc._images(frames).max() == 1.0
    from wm_framework.errors import WMUsageError

    with pytest.raises(WMUsageError, match="crop"):
        wm_framework.create("encoders", "vit", crop=[32, 300, 8, 152], obs_shape=(1, 210, 160))
    with pytest.raises(WMUsageError, match="resize"):
        wm_framework.create("encoders", "vit", resize="lanczos")


def test_flatten_pooling_is_position_aware_where_cls_is_built_from_all_tokens():
    enc = wm_framework.create("encoders", "vit", image_size=[16, 16], patch_size=8, width=16, depth=1, heads=2,
                              projector=False, normalize=False, pooling="flatten", obs_shape=(1, 16, 16))
    assert enc.flatten.in_features == 4 * 16  # 2x2 patches x width
    left, right = torch.zeros(1, 1, 1, 16, 16), torch.zeros(1, 1, 1, 16, 16)
    left[..., 2:4, 2:4] = 1.0
    right[..., 2:4, 10:12] = 1.0  # the same object, one patch to the right
    with torch.no_grad():
        assert not torch.allclose(enc.features(left), enc.features(right))
    from wm_framework.errors import WMUsageError

    with pytest.raises(WMUsageError, match="pooling"):
        wm_framework.create("encoders", "vit", pooling="attention")


def test_conv_stem_gives_the_patch_grid_and_is_checked():
    patch = wm_framework.create("encoders", "vit", image_size=[16, 24], patch_size=8, width=32, depth=1, heads=2,
                                projector=False, pooling="flatten", obs_shape=(1, 16, 24)).eval()
    conv = wm_framework.create("encoders", "vit", image_size=[16, 24], patch_size=8, width=32, depth=1, heads=2,
                               projector=False, pooling="flatten", obs_shape=(1, 16, 24), stem="conv").eval()
    obs = torch.rand(2, 2, 1, 16, 24)
    with torch.no_grad():
        assert conv.features(obs).shape == patch.features(obs).shape == (2, 2, 32)
        tokens = conv.backbone.patch_embed(conv._images(obs))
    assert tokens.shape == (4, 32, 2, 3)  # the same 2x3 grid as a stride-8 patchify conv
    assert sum(isinstance(m, torch.nn.Conv2d) for m in conv.backbone.patch_embed) == 4  # 3 strided + 1x1
    from wm_framework.errors import WMUsageError

    with pytest.raises(WMUsageError, match="stem"):
        wm_framework.create("encoders", "vit", stem="resnet")
    with pytest.raises(WMUsageError, match="power-of-two"):
        wm_framework.create("encoders", "vit", stem="conv", patch_size=14)
