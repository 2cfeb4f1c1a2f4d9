"""Recipe validation, overrides, --smoke and sweeps."""

from __future__ import annotations

import pytest

from wm_framework.errors import RecipeError
from wm_framework.recipe import expand_sweep, load_toml, parse_overrides, parse_value, resolve, validate

from conftest import ROOT, run_wm

GOOD = {
    "name": "t",
    "stages": ["data", "train"],
    "data": {"train": "x.zarr", "window": 3},
    "model": {"encoder": {"type": "mlp", "latent_dim": 8}, "predictor": {"type": "mlp"},
              "losses": {"pred": {"type": "mse", "weight": 2.0}}},
    "train": {"steps": 5},
}


def _problems(data) -> list[str]:
    with pytest.raises(RecipeError) as e:
        validate(data)
    return e.value.problems


def test_good_recipe_validates():
    r = validate(GOOD)
    assert r.data.window == 3 and r.model.losses["pred"]["weight"] == 2.0 and r.train.steps == 5


def test_every_problem_reported_at_once_with_section_key():
    bad = resolve(GOOD, {"train.stepz": 3, "train.lr": "fast", "data.window": 1,
                         "model.encoder.type": "mlpp", "model.predictor.hiden": 3, "probee": {}})
    probs = _problems(bad)
    text = "\n".join(probs)
    assert "train.stepz: unknown key (did you mean 'steps'?)" in probs
    assert any(p.startswith("train.lr: ") for p in probs)
    assert any(p.startswith("data.window: ") and "greater than or equal to 2" in p for p in probs)
    assert "model.encoder.type: unknown encoder 'mlpp' (did you mean 'mlp'?)" in text
    assert "model.predictor: predictor 'mlp': unknown parameter 'hiden' (did you mean 'hidden'?)" in text
    assert "probee: unknown section" in text
    assert len(probs) == 6


def test_missing_sections_and_steps():
    probs = _problems({"name": "t", "stages": ["train"], "train": {}})
    assert "model: missing section (the 'train' stage needs it)" in probs
    assert "data: missing section (the 'train' stage needs it)" in probs
    assert "train.steps: set train.steps or train.epochs" in probs


def test_unknown_stage_and_policy_listed():
    bad = resolve(GOOD, {"stages": ["data", "trian"],
                         "data.collect": {"env": {"type": "bouncing_ball"}, "policies": [{"type": "randm"}], "episodes": 2}})
    text = "\n".join(_problems(bad))
    assert "stages.1: unknown stage 'trian'" in text
    assert "data.collect.policies.0.type: unknown policy 'randm' (did you mean 'random'?)" in text


def test_override_values_parse_as_toml():
    assert parse_overrides(["a.b=3", "c=1e-4", "d=true", "e=[1, 2]", 'f="x"', "g=delta"]) == {
        "a.b": 3, "c": 1e-4, "d": True, "e": [1, 2], "f": "x", "g": "delta"}
    assert parse_value("0.5") == 0.5


def test_override_and_smoke_order():
    data = dict(GOOD, presets={"smoke": {"train.steps": 2, "data.window": 2}})
    out = resolve(data, {"train.steps": 7}, smoke=True)
    assert out["train"]["steps"] == 7 and out["data"]["window"] == 2
    assert resolve(data, {}, smoke=False)["train"]["steps"] == 5


def test_sweep_grid_and_labelled_runs():
    data = dict(GOOD, sweep={"grid": {"train.lr": [0.1, 0.2], "model.encoder.latent_dim": [4, 8]}})
    runs = expand_sweep(data)
    assert [label for label, _ in runs] == ["lr=0.1,latent_dim=4", "lr=0.1,latent_dim=8", "lr=0.2,latent_dim=4", "lr=0.2,latent_dim=8"]
    assert runs[3][1]["train"]["lr"] == 0.2 and runs[3][1]["model"]["encoder"]["latent_dim"] == 8
    data = dict(GOOD, sweep={"runs": [{"label": "cfgA", "overrides": {"train.steps": 1}}, {"label": "cfgB"}]})
    runs = expand_sweep(data)
    assert [(label, r["train"]["steps"]) for label, r in runs] == [("cfgA", 1), ("cfgB", 5)]


def test_sweep_seeds_repeat_every_run():
    data = dict(GOOD, sweep={"runs": [{"label": "cfgA", "overrides": {"train.steps": 1}}, {"label": "cfgB"}],
                             "seeds": [0, 7]})
    runs = expand_sweep(data)
    assert [(label, r["seed"], r["train"]["steps"]) for label, r in runs] == [
        ("cfgA_seed0", 0, 1), ("cfgA_seed7", 7, 1), ("cfgB_seed0", 0, 5), ("cfgB_seed7", 7, 5)]
    assert "sweep" not in runs[0][1]


def test_cli_validate_bad_recipe_exit_2_one_line_per_problem(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('name = "x"\nstages = ["train"]\n[train]\nsteps = "many"\nbatchsize = 3\n')
    r = run_wm("validate", str(f))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "train.steps: Input should be a valid integer" in lines  # strict: "many", true and 1e20 alike
    assert "train.batchsize: unknown key (did you mean 'batch_size'?)" in lines
    assert all(":" in line and "Traceback" not in line for line in lines)


def test_cli_broken_toml_and_missing_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("name = \n")
    r = run_wm("validate", str(f))
    assert r.returncode == 2 and r.stderr.startswith("toml: broken.toml:") and len(r.stderr.strip().splitlines()) == 1
    r = run_wm("run", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "recipe file not found" in r.stderr and "Traceback" not in r.stderr


def test_cli_bad_override_and_bad_option(tmp_path):
    r = run_wm("validate", str(ROOT / "recipes" / "toy_ball.toml"), "train.steps")
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr
    r = run_wm("run", "--no-such-option")
    assert r.returncode == 2


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "recipes").glob("*.toml")))
def test_every_shipped_recipe_validates_full_and_smoke(recipe):
    path = ROOT / "recipes" / recipe
    for smoke in (False, True):
        data = resolve(load_toml(path), {}, smoke)
        validate(data)
        for _, sub in expand_sweep(data):
            validate(sub)
