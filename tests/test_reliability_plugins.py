"""A plugin whose factory raises is reported with its name and never takes down unrelated
runs; a loss that is finite but has a non-finite gradient stops training at that step."""

from __future__ import annotations

import json
import types

import pytest
import torch

from _reliability_util import last_state, tiny_recipe
from wm_framework import hookimpl
from wm_framework.cli import main as wm_main


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss with an Inf gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class InfGradAfter:
    """MSE whose gradient becomes infinite from step ``after`` on (the loss value stays finite)."""

    def __init__(self, after: int = 2):
        self.after, self.step = after, 0

    def on_train_step(self, step: int, total: int) -> None:
        self.step = step

    def __call__(self, out, batch):
        loss = torch.nn.functional.mse_loss(out["pred"].float(), out["target"].float())
        return _InfGrad.apply(loss) if self.step >= self.after else loss


def _exploding_factory(scale: float = 1.0):
    """A factory that crashes (a plugin bug)."""
    raise RuntimeError("kaboom in the factory")


@hookimpl
def register_losses(register):
    register("exploding", _exploding_factory)
    register("inf_grad_after", InfGradAfter)


@pytest.fixture
def faulty_plugin():
    """Install the plugin module `faulty` next to the entry-point plugins (fresh per test)."""
    from wm_framework.plugins import get_plugin_manager

    module = types.ModuleType("faulty")
    module.register_losses = register_losses
    info = get_plugin_manager().register_module(module, "faulty")
    assert info.status == "ok", info.error
    return info


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [x for x in err.splitlines() if x.startswith("error")]


def test_crashing_factory_is_one_line_and_unrelated_runs_work(tmp_path, monkeypatch, capsys, faulty_plugin):
    monkeypatch.chdir(tmp_path)
    bad = tiny_recipe(tmp_path, name="bad.toml", loss="exploding")
    code = wm_main(["run", str(bad), "--out", str(tmp_path / "runs_bad")])
    errors = _errors(capsys.readouterr().err)
    assert code == 1 and len(errors) == 1, errors
    assert "'exploding'" in errors[0] and "plugin 'faulty'" in errors[0] and "kaboom in the factory" in errors[0]
    # The same process, the same plugin set: an unrelated recipe runs, and listing works.
    good = tiny_recipe(tmp_path, name="good.toml", loss="mse")
    assert wm_main(["run", str(good), "--out", str(tmp_path / "runs_good")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert wm_main(["plugins", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["faulty"]["status"] == "ok" and rows["blocks"]["status"] == "ok"
    assert "exploding" in rows["faulty"]["components"]["losses"]


def test_infinite_gradient_with_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch, capsys, faulty_plugin):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path, loss="inf_grad_after", steps=6)
    code = wm_main(["run", str(recipe), "--out", str(tmp_path / "runs")])
    errors = _errors(capsys.readouterr().err)
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("error: step 2: gradient is not finite"), errors[0]
    assert "loss term" not in errors[0]  # it was the gradient, not the loss value
    run = next((tmp_path / "runs").iterdir())
    state = last_state(run)
    assert state["step"] == 2  # the last good step's checkpoint
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records if "loss" in r) == 2


def test_infinite_gradient_skip_policy_finishes(tmp_path, monkeypatch, capsys, faulty_plugin):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path, loss="inf_grad_after", steps=4)
    code = wm_main(["run", str(recipe), 'train.nan_policy="skip"', "--out", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr().err
    run = next((tmp_path / "runs").iterdir())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("skipped")] == [2, 3]
    state = last_state(run)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
