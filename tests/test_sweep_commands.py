"""`wm plan|eval|probe|surprise|straightness` given a sweep directory: every run (or `--runs`),
one comparison table in the sweep's report; a single run works as before.

One tiny real sweep (three runs on the `linear_state` toy env, 8 training steps) is built
once for the module; every command goes through the real `wm` entry point (`cli.main`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _plan_util import run_toy_recipe
from wm_framework.cli import main

LABELS = ["cfgA", "cfgB", "cfgC"]

RECIPE_BODY = """
[train]
steps = 8
batch_size = 16
lr = 3e-3
eval_every = 4
checkpoint_every = 4
log_every = 4
threads = 1
[plan]
episodes = 2
k = 2
budget = 4
planner = { samples = 16, iterations = 2, elites = 4, horizon = 2 }
[eval]
horizons = [1, 3]
episodes = 4
video = false
[probe]
probes = ["ridge"]
baselines = ["static"]
bootstrap = 0
model_gap = false
checkpoints = "last"
[surprise]
episodes = 3
length = 6
[straightness]
windows = 4
length = 4
[[sweep.runs]]
label = "cfgA"
overrides = { "train.lr" = 1e-3 }
[[sweep.runs]]
label = "cfgB"
overrides = { "train.lr" = 3e-3 }
[[sweep.runs]]
label = "cfgC"
overrides = { "model.predictor.hidden" = 8 }
"""

# command -> (extra options, the section title in the sweep's report, the key each run's results.json gets)
COMMANDS = {
    "plan": ([], "Planning across the sweep", "plan"),
    "eval": (["--horizons", "1,3"], "Open-loop rollouts across the sweep", "eval"),
    "probe": ([], "Probes across the sweep", "probes"),
    "surprise": ([], "Surprise across the sweep", "surprise"),
    "straightness": ([], "Temporal straightness across the sweep", "straightness"),
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return run_toy_recipe(tmp_path_factory.mktemp("sweepcmd"), "toy_sweep", RECIPE_BODY, hidden=16)


def _wm(capsys, *args: str) -> tuple[int, str, str]:
    """The real `wm` entry point: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _forget(run: Path, key: str) -> None:
    """Drop ``key`` from a run's results.json, so a test sees that the command wrote it again."""
    f = run / "results.json"
    res = json.loads(f.read_text())
    res.pop(key, None)
    f.write_text(json.dumps(res))


def _table(report: str, title: str) -> list[str]:
    """The run labels of the table rows in a report section."""
    section = report.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run |")]
    return [row.split(" | ")[0][2:] for row in rows]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_on_a_sweep_dir_acts_on_every_run_and_writes_one_table(sweep_dir, capsys, command):
    extra, title, key = COMMANDS[command]
    for label in LABELS:
        _forget(sweep_dir / "sweep" / label, key)
    rc, out, err = _wm(capsys, command, sweep_dir, *extra)
    assert rc == 0, err
    for label in LABELS:  # each run got its own outputs, as if given its own directory
        child = sweep_dir / "sweep" / label
        assert key in json.loads((child / "results.json").read_text()), (label, err)
    report = (sweep_dir / "report.md").read_text()
    assert _table(report, title) == LABELS
    assert "## Sweep runs" in report  # the sections already there are kept
    rows = json.loads((sweep_dir / "results.json").read_text())[f"sweep_{command}"]
    assert [r["run"] for r in rows] == LABELS and all(r["status"] == "ok" and r["values"] for r in rows)
    assert f"report: {sweep_dir / 'report.md'}" in out and out.count("[report](sweep/") == 3


def test_plan_table_has_the_headline_numbers(sweep_dir, capsys):
    rc, _, err = _wm(capsys, "plan", sweep_dir, "--runs", "cfgB")
    assert rc == 0, err
    row = json.loads((sweep_dir / "results.json").read_text())["sweep_plan"][0]["values"]
    child = json.loads((sweep_dir / "sweep" / "cfgB" / "results.json").read_text())["plan"]
    assert row["success rate"] == child["success_rate"] and row["random success rate"] == child["random_success_rate"]
    assert row["plan s (median)"] == child["plan_seconds"]["median"]
    header = (sweep_dir / "report.md").read_text().split("## Planning across the sweep\n\n", 1)[1].splitlines()[0]
    assert "success rate" in header and "random success rate" in header and "plan s (median)" in header


@pytest.mark.parametrize("runs", [["--runs", "cfgC,cfgA"], ["--runs", "cfgC", "--runs", "cfgA"]])
def test_runs_selects_runs_in_the_sweeps_order(sweep_dir, capsys, runs):
    rc, _, err = _wm(capsys, "straightness", sweep_dir, *runs)
    assert rc == 0, err
    assert _table((sweep_dir / "report.md").read_text(), "Temporal straightness across the sweep") == ["cfgA", "cfgC"]
    rows = json.loads((sweep_dir / "results.json").read_text())["sweep_straightness"]
    assert [r["run"] for r in rows] == ["cfgA", "cfgC"]


def test_unknown_run_label_is_a_one_line_usage_error(sweep_dir, capsys):
    before = (sweep_dir / "report.md").read_text()
    rc, _, err = _wm(capsys, "plan", sweep_dir, "--runs", "cfgA,cfgX")
    assert rc == 2
    assert err.strip() == "error: --runs: unknown run(s) cfgX; the sweep has: cfgA, cfgB, cfgC"
    assert (sweep_dir / "report.md").read_text() == before  # nothing ran


def test_runs_on_a_single_run_is_a_usage_error(sweep_dir, capsys):
    rc, _, err = _wm(capsys, "eval", sweep_dir / "sweep" / "cfgA", "--runs", "cfgA")
    assert rc == 2 and len(_errors(err)) == 1 and "is a single run, not a sweep directory" in err


def test_a_single_run_works_as_before(sweep_dir, capsys):
    child = sweep_dir / "sweep" / "cfgB"
    _forget(child, "plan")
    before = (sweep_dir / "results.json").read_text()
    rc, out, err = _wm(capsys, "plan", child)
    assert rc == 0, err
    summary = json.loads(out.splitlines()[0])
    assert set(summary) == {"success_rate", "random_success_rate", "plan_seconds"}
    assert out.splitlines()[1] == f"report: {child / 'report.md'}"
    assert "plan" in json.loads((child / "results.json").read_text())
    assert (sweep_dir / "results.json").read_text() == before  # the sweep's table is not touched


def test_wm_eval_defaults_come_from_the_recipe(sweep_dir, capsys):
    child = sweep_dir / "sweep" / "cfgC"
    rc, _, err = _wm(capsys, "eval", child)  # no options: the recipe's [eval] (4 windows, horizons 1 and 3)
    assert rc == 0, err
    ev = json.loads((child / "results.json").read_text())["eval"]
    assert ev["n_rollouts"] == 4 and ev["horizons"] == [1, 3]
    rc, _, err = _wm(capsys, "eval", child, "--episodes", "2", "--no-video")
    assert rc == 0, err
    assert json.loads((child / "results.json").read_text())["eval"]["n_rollouts"] == 2


def test_a_failing_run_is_recorded_and_the_others_carry_on(sweep_dir, tmp_path, capsys):
    copy = tmp_path / "sweep_copy"
    shutil.copytree(sweep_dir, copy)
    shutil.rmtree(copy / "sweep" / "cfgB" / "checkpoints")
    rc, _, err = _wm(capsys, "straightness", copy)
    assert rc == 1
    assert _errors(err) == [_errors(err)[0]] and "1 of 3 sweep runs failed: cfgB" in err
    rows = json.loads((copy / "results.json").read_text())["sweep_straightness"]
    assert [(r["run"], r["status"]) for r in rows] == [("cfgA", "ok"), ("cfgB", "failed"), ("cfgC", "ok")]
    assert "no checkpoints" in rows[1]["error"]
    report = (copy / "report.md").read_text()
    assert _table(report, "Temporal straightness across the sweep") == LABELS and "| failed: " in report


def test_bad_input_for_every_run_exits_2(sweep_dir, tmp_path, capsys):
    copy = tmp_path / "sweep_copy"
    shutil.copytree(sweep_dir, copy)
    rc, _, err = _wm(capsys, "eval", copy, "--horizons", "1,100", "--runs", "cfgA,cfgB")
    assert rc == 2 and len(_errors(err)) == 1 and "2 of 2 sweep runs failed" in err


def test_grid_labels_with_commas_stay_whole():
    from wm_framework.runs.sweep_dirs import parse_run_labels

    labels = ["lr=0.1,steps=4", "lr=0.2,steps=4", "lr=0.2,steps=8"]
    assert parse_run_labels(["lr=0.2,steps=8,lr=0.1,steps=4"], labels) == ["lr=0.2,steps=8", "lr=0.1,steps=4"]
    assert parse_run_labels(["lr=0.1,steps=4", "nope"], labels) == ["lr=0.1,steps=4", "nope"]
    assert parse_run_labels(["cfgA, cfgC,"], ["cfgA", "cfgC"]) == ["cfgA", "cfgC"]
