"""Bad values are refused up front: one line naming the key, exit 2 (issue 25, point 7)."""

from __future__ import annotations

import pytest

from _reliability_util import tiny_recipe
from wm_framework.cli import main as wm_main


@pytest.mark.parametrize("override, key", [
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),
    ("train.betas=[2.0,-1.0]", "train.betas"),
    ('train.device="tpu"', "train.device"),
    ("train.steps=true", "train.steps"),
    ("train.steps=1e20", "train.steps"),
    ("train.steps=2000000000", "train.steps"),
    ("train.checkpoint_epochs=[-1]", "train.checkpoint_epochs"),
    ("train.batch_size=true", "train.batch_size"),
    ("data.collect.episodes=10000000000000", "data.collect.episodes"),
    ("data.collect.seed=-3", "data.collect.seed"),
])
def test_bad_recipe_values_exit_2_naming_the_key(tmp_path, capsys, override, key):
    recipe = tiny_recipe(tmp_path)
    for cmd in (["validate", str(recipe), override], ["run", str(recipe), override, "--out", str(tmp_path / "runs")]):
        assert wm_main(cmd) == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--max-steps", "0"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--max-steps", "-5"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "10000000000000"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--seed", "-1"],
    ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--workers", "0"],
])
def test_bad_cli_sizes_exit_2(tmp_path, capsys, args):
    assert wm_main([*args, "--out", str(tmp_path / "s.zarr")]) == 2
    assert not (tmp_path / "s.zarr").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_nproc_per_node_zero_exits_2(tmp_path, capsys):
    assert wm_main(["run", str(tiny_recipe(tmp_path)), "--nproc-per-node", "0"]) == 2
    assert "--nproc-per-node" in capsys.readouterr().err
