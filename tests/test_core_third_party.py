"""Third-party plugins: the example package installed (editable) and a broken one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_wm

EXAMPLE = ROOT / "examples" / "wm-plugin-example"
BROKEN = ROOT / "tests" / "fixtures" / "broken-plugin"


def _pip(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def example_installed():
    """pip install -e the example plugin into this test environment (idempotent)."""
    import importlib.metadata as md

    try:
        md.distribution("wm-plugin-example")
    except md.PackageNotFoundError:
        _pip("-e", str(EXAMPLE))
    yield


@pytest.fixture(scope="module")
def broken_on_path(tmp_path_factory):
    """The broken plugin installed into a private directory, reached through PYTHONPATH only."""
    target = tmp_path_factory.mktemp("broken_site")
    _pip("--target", str(target), str(BROKEN))
    return {"PYTHONPATH": str(target)}


def test_example_plugin_listed_with_components(example_installed):
    rows = {r["name"]: r for r in json.loads(run_wm("plugins", "list", "--json").stdout)}
    ex = rows["example"]
    assert ex["package"] == "wm-plugin-example" and ex["version"] == "0.1.0" and ex["status"] == "ok"
    assert ex["components"] == {"envs": ["drift_walk"], "losses": ["example_l1"]}


def test_example_plugin_used_by_a_recipe(example_installed, tmp_path):
    recipe = tmp_path / "walk.toml"
    recipe.write_text(f"""
name = "walk"
[data]
train = "{tmp_path / 'walk.zarr'}"
window = 3
val_fraction = 0.25
[data.collect]
env = {{ type = "drift_walk", max_steps = 20 }}
policies = [{{ type = "random" }}]
episodes = 8
[model]
encoder = {{ type = "identity" }}
predictor = {{ type = "mlp", hidden = 16 }}
[model.losses.l1]
type = "example_l1"
[train]
steps = 150
batch_size = 16
lr = 3e-3
log_every = 50
""")
    r = run_wm("run", str(recipe), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = next((tmp_path / "runs").iterdir())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/l1" in x for x in records)
    # Planning and surprise through the env's own capabilities (goal_success, goal_distance,
    # perturb_physical): nothing in wm-framework knows this env.
    r = run_wm("plan", str(run), "--episodes", "3", "--k", "3", "--samples", "32", "--iterations", "3",
               "--elites", "4", "--horizon", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads((run / "results.json").read_text())["plan"]
    assert plan["env"] == "drift_walk" and plan["episodes"] == 3 and "random_success_rate" in plan
    assert plan["mean_final_error"] >= 0.0  # goal_distance was used
    r = run_wm("surprise", str(run), "--episodes", "3", "--length", "6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    surprise = json.loads((run / "results.json").read_text())["surprise"]
    assert surprise["physical"]["ratio_at_perturbation"] > 5  # a jump of 1 against steps of 0.1
    assert "visual" not in surprise  # the env offers no perturb_visual (and has no pixels)


def test_example_plugin_own_tests_pass(example_installed):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                       capture_output=True, text=True, timeout=300, cwd=EXAMPLE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_broken_plugins_reported_and_wm_keeps_working(broken_on_path, tmp_path):
    r = run_wm("plugins", "list", "--json", env=broken_on_path)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["broken_import"]["status"] == "failed"
    assert "this plugin is broken on purpose" in rows["broken_import"]["error"]
    assert rows["broken_register"]["status"] == "failed"
    assert "registration exploded" in rows["broken_register"]["error"]
    assert rows["broken_register"]["components"] == {}
    assert rows["blocks"]["status"] == "ok"
    # unrelated commands still work, and the half-registered env is gone
    r = run_wm("components", "list", "--kind", "envs", "--json", env=broken_on_path)
    assert r.returncode == 0 and "broken_half" not in r.stdout and "bouncing_ball" in r.stdout
    r = run_wm("validate", str(ROOT / "recipes" / "toy_ball.toml"), env=broken_on_path)
    assert r.returncode == 0, r.stderr
    # the rich table shows them too
    r = run_wm("plugins", "list", env=broken_on_path)
    assert r.returncode == 0 and "broken_import" in r.stdout and "failed" in r.stdout


def test_strict_mode_makes_a_broken_plugin_fatal(broken_on_path):
    r = run_wm("plugins", "list", "--json", env=dict(broken_on_path, WM_STRICT_PLUGINS="1"))
    assert r.returncode == 2
    assert "broken" in r.stderr and "Traceback" not in r.stderr
