"""Planning computes the context shared by all candidates once (issue 24, part 2).

The shared-prefix path must give today's rollouts to 1e-5: attention over a shared
prefix equals causal attention over the concatenated sequence, and whole rollouts of
the GPT ensemble and the LeWM predictor agree with the per-candidate path for windows
that grow, that slide, and that slide past the shared steps.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_plan_cem import _registry_model
from wm_framework.attention import shared_prefix_attention
from wm_framework.stages.plan.rollout import PlanContext, rollout_candidates


@pytest.mark.parametrize("groups, rows, prefix, own", [(1, 5, 3, 1), (2, 4, 6, 3), (3, 1, 1, 4)])
def test_shared_prefix_attention_equals_causal_attention_over_the_whole_sequence(groups, rows, prefix, own):
    torch.manual_seed(0)
    heads, d = 2, 8
    pk, pv = torch.randn(groups, heads, prefix, d), torch.randn(groups, heads, prefix, d)
    q, k, v = (torch.randn(groups * rows, heads, own, d) for _ in range(3))
    got = shared_prefix_attention(q, k, v, pk, pv)
    expand = lambda x: x.repeat_interleave(rows, 0)  # noqa: E731 - group-major rows
    full_q = torch.cat([torch.zeros(groups * rows, heads, prefix, d), q], 2)
    full = F.scaled_dot_product_attention(full_q, torch.cat([expand(pk), k], 2), torch.cat([expand(pv), v], 2),
                                          is_causal=True)[:, :, prefix:]
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)


def _model(kind: str, history: int):
    if kind == "gpt":
        return _registry_model({"type": "state_norm"}, {"type": "gpt_ensemble", "n_layer": 2, "n_head": 2, "n_embd": 16},
                               (14,), "continuous", 7, 2, history)
    return _registry_model({"type": "vit", "image_size": 28, "patch_size": 14, "width": 16, "depth": 1, "heads": 2,
                            "projector_hidden": 32},
                           {"type": "ar_transformer", "depth": 2, "heads": 2, "head_dim": 8, "mlp_dim": 32,
                            "projector_hidden": 32}, (3, 28, 28), "discrete", 4, 2, history)


@pytest.mark.parametrize("kind", ["gpt", "lewm"])
@pytest.mark.parametrize("context, history", [(4, 8), (4, 4), (6, 3)])  # grows; slides; slides past the prefix
def test_rollouts_with_the_shared_prefix_equal_the_per_candidate_ones(kind, context, history):
    torch.manual_seed(0)
    model = _model(kind, history)
    with torch.no_grad():  # AdaLN-Zero starts every block as the identity: give attention a say
        for prm in model.parameters():
            if prm.abs().sum() == 0:
                prm.normal_(0, 0.1)
    assert callable(getattr(model.predictor, "predict_last_shared", None))
    obs = torch.randn(1, context, 14) if kind == "gpt" else torch.rand(1, context, 3, 28, 28)
    a = model.action_spec.block_dim
    ctx = PlanContext.from_obs(model, obs, torch.randn(1, context - 1, a))
    future = torch.randn(7, 5, a)
    shared = rollout_candidates(model, ctx, future, share_prefix=True)
    plain = rollout_candidates(model, ctx, future, share_prefix=False)
    for key in ("latents", "preds", "z_prev"):
        torch.testing.assert_close(shared[key], plain[key], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(shared["latents"][0], shared["latents"][1])  # the candidates differ


def test_shared_prefix_refuses_training_mode():
    model = _model("lewm", 4).train()
    z, a = torch.randn(1, 2, model.predictor.latent_dim), torch.randn(1, 2, model.action_spec.block_dim)
    with pytest.raises(ValueError, match="eval"):
        model.predictor.predict_last_shared(z, a, z.expand(3, -1, -1), a.expand(3, -1, -1))
