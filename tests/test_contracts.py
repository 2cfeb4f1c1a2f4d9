"""Contract tests driven by the registry (timm style): every registered component of
every kind, first-party and third-party alike, is built and checked against the
contract of its kind (wm_framework/contracts.py). A new plugin is tested here without a
new test file; its ``example={...}`` registration meta gives small parameters (defaults
otherwise) and a policy's ``example_env={...}`` the env to play it in (default the toy
``bouncing_ball``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import wm_framework
from wm_framework.registry import resolved

B, T = 2, 4


def _components(kind: str) -> list[str]:
    return sorted(wm_framework.components(kind))


def _build(kind: str, name: str, seed: int = 0):
    """The component from its registration's example parameters (create checks its contract)."""
    comp = wm_framework.components(kind)[name]
    torch.manual_seed(seed)
    return wm_framework.create(kind, name, **comp.meta.get("example", {})), comp


def _obs(obs_shape) -> torch.Tensor:
    return torch.rand(B, T, *obs_shape)


def _roundtrip(module: torch.nn.Module, kind: str, name: str) -> torch.nn.Module:
    """A fresh instance with the module's state loaded through torch.save/load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    fresh, _ = _build(kind, name, seed=123)  # another initialisation: only the loaded state may make them agree
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh.eval()


@pytest.mark.parametrize("name", _components("encoders"))
def test_encoder_contract(name):
    enc, comp = _build("encoders", name)
    enc.eval()
    obs_shape = tuple(comp.meta.get("example", {}).get("obs_shape") or getattr(enc, "obs_shape", None) or ())
    assert obs_shape, f"encoder '{name}': register example={{'obs_shape': ...}} for the contract tests"
    obs = _obs(obs_shape)
    with torch.no_grad():
        z = enc(obs)
    assert z.shape == (B, T, enc.out_dim), f"encoder '{name}': {tuple(z.shape)} != {(B, T, enc.out_dim)}"
    assert torch.isfinite(z).all()
    with torch.no_grad():
        torch.testing.assert_close(_roundtrip(enc, "encoders", name)(obs), z)


@pytest.mark.parametrize("name", _components("predictors"))
def test_predictor_contract(name):
    pred, comp = _build("predictors", name)
    pred.eval()
    ex = comp.meta.get("example", {})
    d, a = int(ex.get("latent_dim", getattr(pred, "latent_dim", 0))), int(ex.get("action_dim", 1))
    z, act = torch.randn(B, T, d), torch.randn(B, T, a)
    if comp.meta.get("input") == "frames":  # predictors over encoded frame stacks take the encoder's output
        z = torch.rand(B, T, d)
    with torch.no_grad():
        out = pred(z, act)
    assert out.shape[:2] == (B, T) and torch.isfinite(out).all()
    if comp.meta.get("causal", True):
        # Causal in T: changing the last step changes no earlier output.
        z2, act2 = z.clone(), act.clone()
        z2[:, -1] += 1.0
        act2[:, -1] += 1.0
        with torch.no_grad():
            out2 = pred(z2, act2)
        torch.testing.assert_close(out2[:, :-1], out[:, :-1])
    with torch.no_grad():
        torch.testing.assert_close(_roundtrip(pred, "predictors", name)(z, act), out)


@pytest.mark.parametrize("name", _components("losses"))
def test_loss_contract_builds_a_callable(name):
    fn, _ = _build("losses", name)
    assert callable(fn)


@pytest.mark.parametrize("name", _components("probes"))
def test_probe_contract_fits_a_linear_map(name):
    probe, _ = _build("probes", name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 2))).astype(np.float32)
    probe.fit(x[:300], y[:300], x[300:350], y[300:350])
    pred = np.asarray(probe.predict(x[350:]))
    assert pred.shape == (50, 2)
    resid = ((pred - y[350:]) ** 2).mean() / y[350:].var()
    assert resid < 0.5, f"probe '{name}' does not fit a linear map (relative error {resid:.2f})"


@pytest.mark.parametrize("name", _components("planners"))
def test_planner_contract(name):
    planner, _ = _build("planners", name)
    for attr in ("plan", "reset"):
        assert callable(getattr(planner, attr)), f"planner '{name}' has no {attr}()"
    assert int(planner.horizon) >= 1


@pytest.mark.parametrize("name", _components("envs"))
def test_env_contract_labels_and_deterministic_reset(name):
    env, _ = _build("envs", name)
    try:
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs) or np.asarray(obs).shape == env.observation_space.shape
        assert set(info.get("labels", {})) == set(env.label_names), f"env '{name}': info['labels'] != label_names"
        obs_again, _ = env.reset(seed=3)
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(obs_again))  # reset(seed) is deterministic
        env.action_space.seed(0)
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert set(info.get("labels", {})) == set(env.label_names)
        assert isinstance(float(reward), float) and isinstance(bool(term), bool) and isinstance(bool(trunc), bool)
    finally:
        env.close()


@pytest.mark.parametrize("name", _components("policies"))
def test_policy_contract_plays_valid_actions_deterministically(name):
    comp = wm_framework.components("policies")[name]
    spec = dict(comp.meta.get("example_env") or {"type": "bouncing_ball"})
    env = wm_framework.make_env(spec.pop("type"), **spec)
    try:
        runs = []
        for _ in range(2):
            policy = wm_framework.create("policies", name, env, **comp.meta.get("example", {}))
            policy.reset(7)
            obs, info = env.reset(seed=7)
            actions = []
            for _ in range(6):
                action = policy(obs, info)
                assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype)
                                                 if np.ndim(action) else action), (name, action)
                actions.append(np.asarray(action).tolist())
                obs, _, term, trunc, info = env.step(action)
                if term or trunc:
                    break
            runs.append(actions)
        assert runs[0] == runs[1], f"policy '{name}' is not deterministic given its seed"
    finally:
        env.close()


@pytest.mark.parametrize("name", _components("stages"))
def test_stage_contract_builds_from_its_config_defaults(name):
    comp = wm_framework.components("stages")[name]
    assert callable(wm_framework.create("stages", name, **comp.meta.get("example", {})))
    config = comp.meta.get("config")
    if config is not None:  # the registered config validates the stage's recipe table
        assert hasattr(resolved(config), "model_fields"), f"stage '{name}': config= must be a pydantic model"


@pytest.mark.parametrize("name", _components("launchers"))
def test_launcher_contract(name):
    launcher, _ = _build("launchers", name)
    assert callable(launcher)


@pytest.mark.parametrize("name", _components("probe_presets"))
def test_probe_preset_contract_gives_valid_tasks_and_reference(name):
    from wm_framework.stages.probe.config import task_preset

    tasks, reference = task_preset(name)
    assert tasks and len({t.name for t in tasks}) == len(tasks)
    if reference is not None:
        assert set(reference.offsets) <= {t.name for t in tasks}

