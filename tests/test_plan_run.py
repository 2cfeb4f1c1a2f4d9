"""`wm plan`, `wm surprise`, `wm straightness` on a real (tiny) trained run: store on disk, checkpoints, report."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from _plan_util import run_toy_recipe

RECIPE_BODY = """
[train]
steps = 200
batch_size = 32
lr = 3e-3
eval_every = 100
checkpoint_every = 100
checkpoint_epochs = [2, 10]
log_every = 100
threads = 1
[plan]
episodes = 4
k = 3
budget = 9
planner = { samples = 64, iterations = 8, elites = 8, horizon = 3 }
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_toy_recipe(tmp_path_factory.mktemp("planrun"), "toy_plan", RECIPE_BODY, hidden=64)


def _app():
    from wm_framework.commands import plan, stage, surprise

    app = typer.Typer()
    app.callback()(lambda: None)
    plan.register(app)
    surprise.register(app)
    stage.register(app)
    return app


def test_wm_plan_beats_random_actions_and_records_results(run_dir):
    res = CliRunner().invoke(_app(), ["plan", str(run_dir), "--episodes", "4"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run_dir / "results.json").read_text())["plan"]
    assert summary["episodes"] == 4 and summary["replay_exact_fraction"] == 1.0
    assert summary["success_rate"] >= 0.75 > summary["random_success_rate"]
    assert summary["plan_seconds"]["median"] > 0 and summary["plan_seconds"]["p95"] >= summary["plan_seconds"]["median"]
    assert summary["samples"] == 64 and summary["horizon"] == 3  # the recipe's [plan] table was used
    assert summary["precision"] == "fp32" and "no native bf16" in summary["precision_reason"]  # WM_CPU_BF16=0 in tests
    report = (run_dir / "report.md").read_text()
    assert "Planning (goal-conditioned CEM)" in report and "success rate (random actions)" in report
    per_task = json.loads((run_dir / "plan.json").read_text())
    assert len(per_task["episodes"]) == 4 and len(per_task["random"]) == 4
    # The env measures a distance to the goal (goal_distance): its final value is reported, per task and in the mean.
    errors = [e["final_error"] for e in per_task["episodes"]]
    assert summary["mean_final_error"] == pytest.approx(sum(errors) / 4)
    assert summary["mean_final_error"] < summary["random_mean_final_error"]
    starts = [e["start_error"] for e in per_task["episodes"]]  # never moving would keep this distance
    assert summary["mean_start_error"] == pytest.approx(sum(starts) / 4) and min(starts) > 0
    assert "never moving would keep it" in report
    assert "mean final distance to the goal" in report


def test_wm_plan_options_override_the_recipe(run_dir):
    from wm_framework.commands.plan import plan_command

    summary = plan_command(run_dir, episodes=2, samples=32, iterations=2, horizon=2, elites=4, random_baseline=False)
    assert summary["samples"] == 32 and summary["iterations"] == 2 and summary["horizon"] == 2
    assert "random_success_rate" not in summary


def test_wm_surprise_and_straightness_write_results_and_plots(run_dir):
    res = CliRunner().invoke(_app(), ["surprise", str(run_dir), "--episodes", "4", "--length", "8"])
    assert res.exit_code == 0, res.output
    results = json.loads((run_dir / "results.json").read_text())
    s = results["surprise"]
    assert s["perturb_at"] == 4 and s["physical"]["ratio_at_perturbation"] > 10
    assert (run_dir / "plots" / "surprise.png").stat().st_size > 1000
    res = CliRunner().invoke(_app(), ["straightness", str(run_dir), "--windows", "8", "--length", "6"])
    assert res.exit_code == 0, res.output
    rows = json.loads((run_dir / "results.json").read_text())["straightness"]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) and len({r["step"] for r in rows}) >= 3
    assert all(-1.0 <= r["straightness"] <= 1.0 for r in rows)
    assert (run_dir / "plots" / "straightness.png").is_file()


def test_wm_stage_runs_any_registered_stage_with_recipe_defaults_and_overrides(run_dir):
    from wm_framework.commands.stage import parse_sets

    assert parse_sets(["windows=8", "a.b=[1, 2]", "name=x"]) == {"windows": 8, "a": {"b": [1, 2]}, "name": "x"}
    res = CliRunner().invoke(_app(), ["stage", "straightness", str(run_dir), "--set", "windows=6", "-s", "length=5"])
    assert res.exit_code == 0, res.output
    rows = json.loads((run_dir / "results.json").read_text())["straightness"]
    assert rows and all(-1.0 <= r["straightness"] <= 1.0 for r in rows)
    # The recipe's [plan] table gives the defaults (64 samples), --set overrides one field.
    res = CliRunner().invoke(_app(), ["stage", "plan", str(run_dir), "--set", "episodes=2", "--set", "random_baseline=false"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run_dir / "results.json").read_text())["plan"]
    assert summary["episodes"] == 2 and summary["samples"] == 64 and "random_success_rate" not in summary


@pytest.mark.parametrize("args, message", [
    (["stage", "straightnes", "RUN"], "straightness"),            # did-you-mean
    (["stage", "train", "RUN"], "wm run"),                          # building stages are not re-run here
    (["stage", "straightness", "RUN", "--set", "windows"], "key=value"),
    (["stage", "straightness", "RUN", "--set", "windows=-3"], "windows"),  # the stage's config validates
])
def test_wm_stage_bad_input_is_one_line(run_dir, args, message):
    from conftest import run_wm

    r = run_wm(*[str(run_dir) if a == "RUN" else a for a in args])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
