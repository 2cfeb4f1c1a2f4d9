"""What a newcomer meets first: --version, -h, shipped recipes, presets, quiet ALE,
files readable by lab-mates (umask), and a wheel that carries the recipes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_wm


def test_version_prints_and_exits_zero():
    from wm_framework import __version__

    for flag in ("--version", "-V"):
        r = run_wm(flag)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"wm-framework {__version__}"


@pytest.mark.parametrize("argv", [["-h"], ["run", "-h"], ["data", "collect", "-h"], ["recipes", "-h"],
                                  ["recipes", "cp", "-h"], ["plugins", "list", "-h"], ["validate", "-h"]])
def test_dash_h_is_help_everywhere(argv):
    r = run_wm(*argv)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_collect_help_points_at_a_command_that_exists():
    r = run_wm("data", "collect", "--help")
    assert "wm components list --kind envs" in " ".join(r.stdout.split())  # help text wraps
    listed = run_wm("components", "list", "--kind", "envs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "breakout" in {row["name"] for row in json.loads(listed.stdout)}


def test_ale_banner_does_not_reach_the_terminal(tmp_path):
    r = run_wm("data", "collect", "--env", "breakout", "--policy", "random_active", "--episodes", "1",
               "--max-steps", "10", "--out", str(tmp_path / "b.zarr"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "A.L.E" not in r.stderr + r.stdout and "Stella" not in r.stderr + r.stdout


# ----------------------------------------------------------------------------- umask
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_respect_the_umask(tmp_path, mask):
    from wm_framework.atomic import atomic_write_json, atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.md", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("a.md", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_checkpoints_respect_the_umask(tmp_path):
    import torch

    from wm_framework.train.checkpoint import TRAINER_STATE, save_training_checkpoint

    old = os.umask(0o022)
    try:
        save_training_checkpoint(tmp_path, "last", {"w": torch.zeros(2)}, {"step": 1})
    finally:
        os.umask(old)
    for name in ("last.safetensors", TRAINER_STATE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# ----------------------------------------------------------------------------- shipped recipes
def test_recipes_list_shows_every_shipped_recipe():
    r = run_wm("recipes", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {p.stem for p in (ROOT / "recipes").glob("*.toml")}
    assert rows["lewm_breakout"]["needs_gpu"] is True and rows["toy_ball"]["needs_gpu"] is False
    assert all("smoke" in row["presets"] and row["description"] for row in rows.values())
    table = run_wm("recipes", "list", env={"COLUMNS": "200"})
    assert "lewm_breakout" in table.stdout and "GPU" in table.stdout


def test_recipes_cp_copies_and_keeps_an_existing_file(tmp_path):
    r = run_wm("recipes", "cp", "toy_ball", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    copied = tmp_path / "toy_ball.toml"
    assert copied.read_text() == (ROOT / "recipes" / "toy_ball.toml").read_text()
    again = run_wm("recipes", "cp", "toy_ball", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert run_wm("recipes", "cp", "toy_ball", "--force", cwd=tmp_path).returncode == 0
    (tmp_path / "sub").mkdir()
    assert run_wm("recipes", "cp", "lewm_breakout", "sub", cwd=tmp_path).returncode == 0
    assert (tmp_path / "sub" / "lewm_breakout.toml").is_file()
    bad = run_wm("recipes", "cp", "lewm_brekout", cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'lewm_breakout'" in bad.stderr


def test_unknown_recipe_name_is_one_line_exit_2(tmp_path):
    r = run_wm("run", "toy_bal", cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "did you mean 'toy_ball'" in r.stderr


def test_run_a_shipped_recipe_by_name_from_any_directory(tmp_path):
    """`wm run toy_ball --smoke` in an empty folder, umask 022: data, run and report land
    there, and every file the project writes is readable by others."""
    code = "import os, sys; os.umask(0o022); from wm_framework.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "run", "toy_ball", "--smoke"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("_toy_ball_smoke")
    for name in ("recipe.resolved.toml", "run.json", "report.md", "results.json", "run.log", "checkpoints/last.safetensors",
                 "checkpoints/last.trainer.pt"):
        path = runs[0] / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
    assert (tmp_path / "data" / "toy_ball_smoke.zarr").is_dir()


# ----------------------------------------------------------------------------- presets
def _recipe_with_presets(tmp_path: Path, presets: str) -> Path:
    text = (ROOT / "recipes" / "toy_ball.toml").read_text().split("[presets.smoke]")[0] + presets
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_unknown_preset_is_exit_2_naming_the_presets(tmp_path):
    path = _recipe_with_presets(tmp_path, '[presets.smoke]\n"train.steps" = 2\n[presets.cpu]\n"train.steps" = 3\n')
    r = run_wm("run", str(path), "--preset", "cpux", cwd=tmp_path)
    assert r.returncode == 2
    assert "presets.cpux" in r.stderr and "did you mean 'cpu'" in r.stderr and "smoke, cpu" in r.stderr
    both = run_wm("run", str(path), "--smoke", "--preset", "cpu", cwd=tmp_path)
    assert both.returncode == 2 and "choose one" in both.stderr


def test_preset_selection_and_override_order():
    from wm_framework.recipe import load_toml, resolve

    data = load_toml(ROOT / "recipes" / "toy_ball.toml")
    data["presets"]["cpu"] = {"train.steps": 50, "train.lr": 0.01}
    assert resolve(data, preset="cpu")["train"]["steps"] == 50
    assert resolve(data, {"train.steps": 7}, preset="cpu")["train"]["steps"] == 7  # the command line wins
    assert resolve(data, smoke=True)["train"]["steps"] == 20
    assert resolve(data)["train"]["steps"] == 300


def test_validate_checks_every_preset(tmp_path):
    path = _recipe_with_presets(tmp_path, '[presets.smoke]\n"train.steps" = 2\n[presets.cpu]\n"train.stepz" = 3\n')
    r = run_wm("validate", str(path))
    assert r.returncode == 2
    assert "presets.cpu.train.stepz: unknown key" in r.stderr and "presets.smoke" not in r.stderr
    ok = run_wm("validate", "toy_ball")
    assert ok.returncode == 0 and "(full size, preset smoke)" in ok.stdout


def test_old_smoke_table_gets_a_clear_message(tmp_path):
    path = _recipe_with_presets(tmp_path, '[smoke]\n"train.steps" = 2\n')
    r = run_wm("validate", str(path))
    assert r.returncode == 2 and "[presets.smoke]" in r.stderr


def test_every_shipped_recipe_validates_with_every_preset():
    from wm_framework.recipe import load_toml, validate_all_presets

    for path in sorted((ROOT / "recipes").glob("*.toml")):
        checked = validate_all_presets(load_toml(path))
        assert "preset smoke" in checked, path.name


# ----------------------------------------------------------------------------- packaging
def test_wheel_carries_the_recipes(tmp_path):
    """`pip wheel --no-deps .` on a copy of the sources (setuptools writes build/ next to
    them, which must not happen in the checkout under test)."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("wm_framework", "wm_plugins", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "dist").glob("wm_framework-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for toml in (ROOT / "recipes").glob("*.toml"):
        assert f"wm_framework/recipes/{toml.name}" in names, toml.name
    assert "wm_plugins/atari/__init__.py" in names
