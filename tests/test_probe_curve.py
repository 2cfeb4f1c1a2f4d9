"""The learning curve measured during training: records, plot, report section, resume."""

from __future__ import annotations

import json

from conftest import ROOT


def _run(tmp_path, *extra):
    from wm_framework.runs.run import run_recipe

    return run_recipe(str(ROOT / "recipes" / "toy_ball.toml"),
                      [f"data.train={tmp_path / 'ball.zarr'}", "train.steps=20", "train.eval_every=10",
                       "train.checkpoint_every=10", "train.log_every=10", "train.probe_curve={every = 10, rows = 64}",
                       *extra],
                      smoke=True, out=str(tmp_path / "runs"), progress=False)


def test_curve_records_plot_and_report(tmp_path):
    run = _run(tmp_path)
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in recs if any(k.startswith("curve/") for k in r)]
    assert [r["step"] for r in curve] == [0, 10, 20]  # the random init, then every 10 steps
    labels = {"ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"}
    assert {k.removeprefix("curve/") for k in curve[-1] if k.startswith("curve/")} == labels
    assert all(-10 < r["curve/ball_x"] <= 1 for r in curve)
    # Diagnostics: the toy model predicts its next latent, so copy-last is defined.
    assert curve[-1]["diag/pred_vs_copy"] > 0 and curve[-1]["diag/latent_dim"] > 0
    assert 0 <= curve[-1]["diag/dead_dims"] <= curve[-1]["diag/latent_dim"]
    png = run / "plots" / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "report.md").read_text()
    assert "## Learning curve" in report and "plots/learning_curve.png" in report
    results = json.loads((run / "results.json").read_text())
    assert [h["step"] for h in results["probe_curve"]["history"]] == [0, 10, 20]


def test_curve_cadence_off_by_default_and_validated(tmp_path):
    from wm_framework.errors import RecipeError
    from wm_framework.recipe import load_recipe

    run = _run(tmp_path, "train.probe_curve.every=1000")
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "diag/dead_dims" in r] == [0, 20]
    import pytest

    with pytest.raises(RecipeError, match="train.probe_curve.every"):
        load_recipe(ROOT / "recipes" / "toy_ball.toml", ["train.probe_curve={every = 0}"])
    assert load_recipe(ROOT / "recipes" / "toy_ball.toml").train.probe_curve is None


def test_replot_draws_the_curve_again_from_metrics(tmp_path):
    from wm_framework.train.probe_curve import replot

    run = _run(tmp_path)
    out = replot(run, tmp_path / "again.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    import pytest

    with pytest.raises(SystemExit, match="no learning-curve records"):
        replot(empty)
