"""Figures that say what they are: `--resume` overrides applied or refused, and eval figures
naming their split, with n and a spread. A real store, real training (a few seconds)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, run_wm

RECIPE = """
name = "toy_truth"
seed = 1
stages = ["data", "train", "eval"]
[data]
train = "{store}"
window = 4
frameskip = 2
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 40 }}
policies = [{{ type = "random" }}]
episodes = 8
[model]
encoder = {{ type = "mlp", latent_dim = 8, hidden = 32 }}
predictor = {{ type = "mlp", hidden = 32 }}
[model.losses.pred]
type = "mse"
[train]
steps = 20
batch_size = 16
lr = 3e-3
eval_every = 10
checkpoint_every = 10
log_every = 5
threads = 1
[eval]
horizons = [1, 2]
episodes = 12
video = false
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from wm_framework.runs.run import run_recipe

    tmp = tmp_path_factory.mktemp("truth")
    recipe = tmp / "r.toml"
    recipe.write_text(RECIPE.format(store=str(tmp / "toy.zarr")))
    return run_recipe(str(recipe), [], out=str(tmp / "runs"), progress=False)


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_eval_without_a_test_store_names_the_val_split_and_reports_n_and_spread(finished_run):
    ev = _results(finished_run)["eval"]
    # No test store, no holdout policies: the rollouts ran on the validation split, and say so.
    assert ev["split"] == "val" and ev["split_requested"] == "test"
    assert "not a held-out figure" in ev["split_note"]
    assert ev["n_rollouts"] == 12
    for who in ("model", "copy_last"):
        for h in ("1", "2"):
            s = ev["spread"][who][h]["latent_mse"]
            assert s["std"] > 0 and s["ci95"] == pytest.approx(1.96 * s["std"] / 12 ** 0.5)
    assert ev["overlap"]["total"] > 0 and "occur in training" in ev["overlap"]["describe"]
    md = (finished_run / "report.md").read_text()
    section = md[md.index("## Open-loop rollouts"):]
    assert "n = 12 open-loop rollouts on the **val split (no test store" in section
    assert "`test` split" not in section and " ± " in section
    assert "Train/evaluation overlap: " in section


def test_resume_applies_safe_overrides_and_records_them(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert _results(run)["train"]["global_step"] == 20
    r = run_wm("run", "--resume", str(run), "train.steps=30", "eval.episodes=6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _results(run)["train"]["global_step"] == 30  # it trained on, to the new step count
    assert _results(run)["eval"]["n_rollouts"] == 6
    resolved = tomllib.loads((run / "recipe.resolved.toml").read_text())
    assert resolved["train"]["steps"] == 30 and resolved["eval"]["episodes"] == 6
    changes = json.loads((run / "run.json").read_text())["resumed_with"][-1]["changes"]
    assert {(c["key"], c["value"], c["previous"]) for c in changes} == {("train.steps", 30, 20), ("eval.episodes", 6, 12)}


def test_resume_refuses_overrides_that_would_change_the_experiment(finished_run, tmp_path):
    from wm_framework.errors import WMUsageError
    from wm_framework.runs.run import run_recipe

    before = (finished_run / "recipe.resolved.toml").read_text()
    r = run_wm("run", "--resume", str(finished_run), "train.steps=40", "model.encoder.latent_dim=16", "seed=5",
               cwd=tmp_path)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "model.encoder.latent_dim" in line and "seed" in line and "train.steps" not in line.split("cannot")[0]
    with pytest.raises(WMUsageError, match="only train longer"):
        run_recipe(None, ["train.steps=10"], resume=str(finished_run), progress=False)
    with pytest.raises(WMUsageError, match="data.window"):
        run_recipe(None, ["data.window=3"], resume=str(finished_run), progress=False)
    assert (finished_run / "recipe.resolved.toml").read_text() == before  # nothing changed on disk
    assert "resumed_with" not in json.loads((finished_run / "run.json").read_text())


def test_resume_rules_for_measurement_tables_and_runs_setting_both_lengths():
    from wm_framework.errors import WMUsageError
    from wm_framework.runs.resume import is_safe, resume_overrides
    from wm_framework.recipe import load_toml

    assert is_safe("train.probe_curve") and is_safe("train.probe_curve.every") and is_safe("train.views.images")
    assert not is_safe("train.lr") and not is_safe("model.encoder.width")
    data = load_toml(ROOT / "recipes" / "lewm_breakout.toml")  # sets train.epochs = 100
    data["train"]["steps"] = 50  # a preset that also sets steps: steps wins, so steps may grow
    new, changes = resume_overrides(data, ["train.steps=80"])
    assert new["train"]["steps"] == 80 and changes == [{"key": "train.steps", "value": 80, "previous": 50}]
    del data["train"]["steps"]
    with pytest.raises(WMUsageError, match="extend it with train.epochs"):
        resume_overrides(data, ["train.steps=80"])
