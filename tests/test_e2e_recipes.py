"""Every shipped recipe, end to end through the real `wm run --smoke` (CleanRL-style smoke runs).

Each runs in a fresh working directory (the recipes' relative data paths resolve there),
collects its data from the real environment, trains, runs its later stages, and must
leave a report and results with the sections its stages promise. A few extra overrides
shrink the heavier recipes further so the whole file stays within CI's time.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_wm

# recipe -> (extra overrides, results.json keys that must exist, report.md strings)
CASES = {
    "toy_ball.toml": ([], ["train"], ["## Training"]),
    "breakout_data.toml": ([], [], []),
    "lewm_breakout.toml": (["train.steps=6", "train.eval_every=3", "train.checkpoint_every=3",
                            "probe.max_train_rows=600", "probe.max_eval_rows=300"],
                           ["train", "probes"], ["## Probes", "ball_pos", "paddle_pos_act", "published (LeWM)", "raw pixels"]),
    "coinrun_nextframe.toml": (["train.steps=6"], ["train", "eval"], ["copy-last-frame", "0.00205"]),
    "breakout_nextframe.toml": (["train.steps=6"], ["train", "eval"], ["copy-last-frame"]),
    "arx5_delta_sweep.toml": (["train.steps=8"], ["sweep", "arx5_sweep"], ["cfgA", "cfgD", "fingerprint"]),
    "latent_actions_breakout.toml": (["train.steps=6"], ["sweep", "latent_actions"], ["codebook"]),
}


def test_every_shipped_recipe_has_a_case():
    assert sorted(CASES) == sorted(p.name for p in (ROOT / "recipes").glob("*.toml"))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(CASES))
def test_recipe_smoke_end_to_end(recipe, tmp_path):
    extra, result_keys, report_strings = CASES[recipe]
    r = run_wm("run", str(ROOT / "recipes" / recipe), "--smoke", *extra, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert (run / "recipe.resolved.toml").is_file() and (run / "run.json").is_file()
    if result_keys:
        results = json.loads((run / "results.json").read_text())
        for key in result_keys:
            assert key in results, (key, sorted(results))
        report = (run / "report.md").read_text()
        for text in report_strings:
            assert text in report, text
    if recipe.endswith("nextframe.toml"):  # pixel models log image metrics during validation
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert any({"val/mse", "val/psnr", "val/ssim"} <= set(x) for x in records)
    if recipe == "breakout_data.toml":
        info = run_wm("data", "info", "data/smoke/breakout_data_train.zarr", "--json", cwd=tmp_path)
        assert info.returncode == 0, info.stderr
        policies = json.loads(info.stdout)["policies"]
        assert set(policies) == {"center", "heuristic", "passive", "random_active", "wall_hugger"}
