"""GPT ensemble state model, representations, common-space scoring and the sweep report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wm_plugins.gpt_state import normalization as nz
from wm_plugins.gpt_state.compare import rollout_states, score_config
from wm_plugins.gpt_state.predictor import GPTEnsemblePredictor, StateNormEncoder, ensemble_mse
from wm_plugins.gpt_state.report import (SweepReportConfig, checkpoint_fingerprint, evaluate_sweep,
                                         export_params)

torch.set_num_threads(1)
D, A = 14, 7
TINY = dict(n_layer=2, n_head=2, n_embd=32, history=16)


def _stats(x):
    x = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist()}


@pytest.fixture(scope="module")
def arx5_data():
    """Real ARX5 windows from the waypoints policy: states [W, 24, 14], actions [W, 24, 7]."""
    pytest.importorskip("mujoco")
    from wm_framework.plugins import get_registry

    env = get_registry().create("envs", "arx5", max_episode_steps=96)
    policy = get_registry().create("policies", "waypoints", env)
    obs_rows, act_rows, ends = [], [], []
    for ep in range(4):
        obs, info = env.reset(seed=ep)
        policy.reset(ep)
        for _ in range(96):
            a = policy(obs, info)
            obs_rows.append(obs); act_rows.append(a)
            obs, *_, info = env.step(a)
        obs_rows.append(obs); act_rows.append(np.full(7, np.nan, np.float32))
        ends.append(len(obs_rows))
    obs_rows, act_rows = np.array(obs_rows), np.array(act_rows)
    states, actions = nz.episode_arrays_to_windows(obs_rows, act_rows, ends, length=24, stride=4)
    return {"states": states, "actions": torch.nan_to_num(actions),
            "state_stats": _stats(obs_rows), "action_stats": _stats(act_rows[~np.isnan(act_rows).any(1)])}


def _model(data, seed=0, **kw):
    torch.manual_seed(seed)
    enc = StateNormEncoder((D,), data["state_stats"])
    pred = GPTEnsemblePredictor(state_stats=data["state_stats"], action_stats=data["action_stats"], **{**TINY, **kw})
    pred.fit_normalization(data["states"], data["actions"])
    return enc, pred


# -- the ensemble -----------------------------------------------------------------------
def _count_module_calls(model, z, a):
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()]
    model(z, a)
    for h in hooks:
        h.remove()
    return len(calls)


def test_members_differ_and_run_in_one_forward():
    z, a = torch.randn(3, 10, D), torch.randn(3, 10, A)
    models = {k: GPTEnsemblePredictor(ensemble_size=k, **TINY).eval() for k in (1, 2, 5)}
    calls = {k: _count_module_calls(m, z, a) for k, m in models.items()}
    assert calls[1] == calls[2] == calls[5]  # no Python loop over members
    out = models[2](z, a)
    assert out.shape == (3, 10, 2, D)
    assert (out[:, :, 0] - out[:, :, 1]).abs().mean() > 1e-3  # independent initialisations


def test_each_member_equals_a_single_model_with_its_weights():
    torch.manual_seed(0)
    big = GPTEnsemblePredictor(ensemble_size=3, **TINY).eval()
    one = GPTEnsemblePredictor(ensemble_size=1, **TINY).eval()
    one.load_state_dict({k: (v[1:2] if v.dim() and v.shape[0] == 3 and "core" in k else v)
                         for k, v in big.state_dict().items()})
    z, a = torch.randn(2, 8, D), torch.randn(2, 8, A)
    torch.testing.assert_close(big(z, a)[:, :, 1], one(z, a)[:, :, 0], rtol=1e-5, atol=1e-5)


def test_prediction_is_causal_in_time():
    model = GPTEnsemblePredictor(**TINY).eval()
    z, a = torch.randn(2, 12, D), torch.randn(2, 12, A)
    z2 = z.clone(); z2[:, 7] += 5.0
    y, y2 = model(z, a), model(z2, a)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert (y[:, 7:] - y2[:, 7:]).abs().max() > 1e-3


def test_init_scales_and_weight_decay_exemptions():
    model = GPTEnsemblePredictor(n_layer=4, n_head=2, n_embd=64, history=8, ensemble_size=2)
    proj = model.core.blocks[0].mlp.c_proj.weight
    fc = model.core.blocks[0].mlp.c_fc.weight
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)
    assert proj.std().item() == pytest.approx(0.02 / np.sqrt(8), rel=0.05)
    exempt = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert exempt and all(n.endswith(".bias") or ".ln" in n for n in exempt)
    assert all(p.dim() >= 3 or n == "core.wpe" for n, p in model.named_parameters() if n not in exempt)


def test_context_noise_ramp_applies_in_training_only():
    model = GPTEnsemblePredictor(context_noise=0.05, context_noise_ramp_steps=100, **TINY)
    model.on_train_step(50, 1000)
    assert model.current_noise == pytest.approx(0.025)
    model.on_train_step(500, 1000)
    assert model.current_noise == pytest.approx(0.05)
    z, a = torch.randn(2, 6, D), torch.randn(2, 6, A)
    model.eval()
    torch.testing.assert_close(model(z, a), model(z, a))
    model.train()
    assert not torch.allclose(model(z, a), model(z, a))
    model.on_train_step(0, 1000)
    torch.testing.assert_close(model(z, a), model(z, a))  # no noise at step 0 (dropout 0)


# -- representations ------------------------------------------------------------------------
def test_delta_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 9, D, generator=g, dtype=torch.float64)
    s_next = torch.randn(4, 9, D, generator=g, dtype=torch.float64)
    a = torch.randn(4, 9, 2 * A, generator=g, dtype=torch.float64)  # frameskip 2 blocks
    da = nz.to_delta_action(a, s, A)
    torch.testing.assert_close(da[..., A:], a[..., A:] - s[..., :A], rtol=0, atol=0)
    torch.testing.assert_close(nz.from_delta_action(da, s, A), a, rtol=0, atol=1e-15)
    torch.testing.assert_close(nz.from_delta_state(nz.to_delta_state(s_next, s), s), s_next, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode", ["absolute", "delta"])
def test_target_and_absolute_next_state_are_inverse(arx5_data, mode):
    enc, pred = _model(arx5_data, state_prediction_mode=mode, action_representation="delta")
    s = arx5_data["states"][:, :17]
    z = enc(s)
    target = pred.make_target(z, s)  # [W, 16, K, D]
    assert target.shape == (s.shape[0], 16, 2, D)
    back = pred.absolute_next_state(target, z[:, :-1])
    torch.testing.assert_close(back[:, :, 0], s[:, 1:], rtol=0, atol=1e-4)


def test_fit_normalization_matches_definitions(arx5_data):
    enc, pred = _model(arx5_data)
    s, a = arx5_data["states"].double(), arx5_data["actions"].double()
    dstate = (s[:, 1:] - s[:, :-1]).reshape(-1, D)
    dact = (a[:, :-1] - s[:, :-1, :A]).reshape(-1, A)
    torch.testing.assert_close(pred.delta_state_mean, dstate.mean(0).float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pred.delta_action_std, dact.std(0, unbiased=False).float(), rtol=1e-4, atol=1e-6)
    assert int(pred.delta_stats_fitted) == 1


# -- training, checkpoint, scoring ---------------------------------------------------------
def test_small_config_trains_and_lowers_the_loss(arx5_data):
    enc, pred = _model(arx5_data, state_prediction_mode="delta", action_representation="delta")
    opt = torch.optim.AdamW(pred.parameters(), lr=3e-3)
    s, a = arx5_data["states"][:, :17], arx5_data["actions"][:, :17]
    pred.train()
    losses = []
    for step in range(25):
        pred.on_train_step(step, 25)
        z = enc(s)
        loss = ensemble_mse({"pred": pred(z[:, :-1], a[:, :-1]), "target": pred.make_target(z, s)})
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


def test_export_reload_gives_identical_predictions(arx5_data, tmp_path):
    enc, pred = _model(arx5_data, action_representation="delta")
    model = torch.nn.ModuleDict({"encoder": enc, "predictor": pred}).eval()
    meta = {"best_val_loss": 0.5, "best_step": 3, "global_step": 4, "action_representation": "delta",
            "state_prediction_mode": "absolute", "config_label": "cfgC"}
    params_dir = export_params(tmp_path / "cfgC", model.state_dict(), meta, pred.normalization_stats())
    blob = torch.load(params_dir / "params.pt", weights_only=True)
    assert {k: blob[k] for k in meta} == meta
    enc2, pred2 = StateNormEncoder((D,)), GPTEnsemblePredictor(action_representation="delta", **TINY)
    fresh = torch.nn.ModuleDict({"encoder": enc2, "predictor": pred2}).eval()
    fresh.load_state_dict(blob["model_state_dict"])
    s, a = arx5_data["states"][:4, :12], arx5_data["actions"][:4, :12]
    torch.testing.assert_close(pred2(enc2(s), a), pred(enc(s), a), rtol=0, atol=0)
    stats = json.loads((params_dir / "normalization_stats.json").read_text())
    assert stats["action_representation"] == "delta" and len(stats["delta_state"]["std"]) == D


def test_fingerprint_equals_the_shell_command(tmp_path):
    if not all(shutil.which(c) for c in ("find", "sort", "xargs", "sha256sum")):
        pytest.skip("coreutils not available")
    cfg = tmp_path / "cfgB"
    (cfg / "params" / "sub").mkdir(parents=True)
    (cfg / "params" / "params.pt").write_bytes(b"\x00weights\xff" * 100)
    (cfg / "params" / "normalization_stats.json").write_text('{"a": 1}\n')
    (cfg / "params" / "sub" / "extra.bin").write_bytes(b"x")
    shell = subprocess.run("find params -type f | sort | xargs sha256sum | sha256sum", shell=True, cwd=cfg,
                           capture_output=True, text=True, check=True).stdout.split()[0]
    assert checkpoint_fingerprint(cfg) == shell
    (cfg / "params" / "sub" / "extra.bin").write_bytes(b"y")
    assert checkpoint_fingerprint(cfg) != shell


def test_rollout_horizon_one_equals_the_one_step_prediction(arx5_data):
    enc, pred = _model(arx5_data, state_prediction_mode="delta")
    pred.eval()
    s, a = arx5_data["states"][:5], arx5_data["actions"][:5]
    roll = rollout_states(enc, pred, s, a, context=6, horizon=3)
    with torch.no_grad():
        direct = pred.absolute_next_state(pred(enc(s[:, :6]), a[:, :6])[:, -1], enc(s[:, 5])).mean(-2)
    torch.testing.assert_close(roll[:, 0], direct)
    scores = score_config(enc, pred, s, a, horizons=(1, 4, 8), context=6)
    assert set(scores["rollout_mse"]) == {1, 4, 8} and scores["common_mse"] > 0


class _FakeSampler:
    def __init__(self, states, actions):
        self.states, self.actions = states.numpy(), actions.unflatten(-1, (1, A)).numpy()

    def __len__(self):
        return len(self.states)

    def get(self, idx):
        return {"obs": self.states[idx], "action": self.actions[idx]}


class _FakeRun:
    """The parts of RunContext the report stage uses."""

    def __init__(self, path, model, results, sampler):
        self.path, self._model, self._results, self._sampler = Path(path), model, results, sampler
        self.sections = {}

    def load_model(self, checkpoint="last"):
        return self._model

    def results(self):
        return self._results

    def sampler(self, split, length=None):
        return self._sampler

    def update_results(self, key, value):
        self._results[key] = value

    def write_report_section(self, key, title, markdown):
        self.sections[key] = markdown


def test_sweep_report_stage_end_to_end(arx5_data, tmp_path):
    sampler = _FakeSampler(arx5_data["states"], arx5_data["actions"])
    runs = []
    for label, act, st in [("cfgA_seed0", "absolute", "absolute"), ("cfgA_seed1", "absolute", "absolute"),
                           ("cfgD_seed0", "delta", "delta")]:
        enc, pred = _model(arx5_data, action_representation=act, state_prediction_mode=st)
        model = SimpleNamespace(encoder=enc, predictor=pred,
                                state_dict=torch.nn.ModuleDict({"encoder": enc, "predictor": pred}).state_dict)
        train = {"best_val_loss": 0.1 if label != "cfgA_seed1" else 0.3, "best_step": 5, "global_step": 9,
                 "final_grad_norm": 0.04}
        runs.append((label, _FakeRun(tmp_path / "sweep" / label, model, {"train": train}, sampler)))
    parent = _FakeRun(tmp_path, None, {}, sampler)
    parent.sweep_runs = runs
    cfg = SweepReportConfig(horizons=[1, 4], rollout_context=4, max_windows=8,
                            groups={"position": [0, 7], "velocity": [7, 14]})
    result = evaluate_sweep(parent, cfg)
    rows = {r["label"]: r for r in result["rows"]}
    assert set(rows) == {"cfgA_seed0", "cfgA_seed1", "cfgD_seed0"}
    md = parent.sections["arx5_sweep"]
    for label, row in rows.items():
        blob = torch.load(tmp_path / "checkpoints" / label / "params" / "params.pt", weights_only=True)
        assert blob["config_label"] == label and blob["global_step"] == 9
        assert row["fingerprint"] == checkpoint_fingerprint(tmp_path / "checkpoints" / label)
        assert row["rollout_mse_h4"] >= 0 and len(row["rollout_curve"]) == 4
        # Position and velocity errors average to the whole (7 dims each).
        assert (row["common_mse_position"] + row["common_mse_velocity"]) / 2 == pytest.approx(row["common_mse"], rel=1e-4)
        # Whole (64 hex digits), as the published table prints it, so a reader can check it.
        assert len(row["fingerprint"]) == 64 and f"`{row['fingerprint']}`" in md
    configs = {c["label"]: c for c in result["configs"]}
    assert configs["cfgA"]["n"] == 2 and configs["cfgD"]["n"] == 1
    assert configs["cfgA"]["best_val_loss"] == pytest.approx(0.2) and configs["cfgA"]["best_val_loss_std"] == pytest.approx(0.1414, rel=1e-3)
    assert configs["cfgD"]["best_val_loss_std"] is None
    assert configs["cfgA"]["reference_best_val_loss"] == 0.0982
    assert sorted(c["verdict"] for c in configs.values()) in (["baseline", "winner"], ["discard", "winner"])
    assert result["rankings"]["common_mse"][0] == next(c for c, v in configs.items() if v["verdict"] == "winner")
    assert rows["cfgA_seed1"]["verdict"] == configs["cfgA"]["verdict"]
    assert "| cfgA | absolute | absolute | 2 | 0.2 ± 0.14 |" in md and "**Error by state dims**" in md
    assert (tmp_path / "plots" / "arx5_rollout_mse.png").stat().st_size > 1000
    assert "0.0764" in md and parent.results()["arx5_sweep"] is result


def test_seed_labels_group_into_configs():
    from wm_plugins.gpt_state.seeds import aggregate, config_label

    assert config_label("cfgA_seed12") == "cfgA" and config_label("cfgA") == "cfgA"
    rows = [{"label": "x_seed0", "m": 1.0}, {"label": "x_seed1", "m": 3.0}, {"label": "y", "m": None}]
    agg = aggregate(rows, ["m"])
    assert [(a["label"], a["n"], a["m"], a["m_min"], a["m_max"]) for a in agg] == [("x", 2, 2.0, 1.0, 3.0),
                                                                                    ("y", 1, None, None, None)]
