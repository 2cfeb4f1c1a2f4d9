"""The example plugin's own tests: its components work through wm-framework's public API."""

import numpy as np
import torch
from gymnasium.utils.env_checker import check_env

from wm_plugin_example.losses import L1Loss
from wm_plugin_example.walk import DriftWalkEnv


def test_env_passes_gymnasium_checker_and_moves_with_action():
    env = DriftWalkEnv(noise=0.0)
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    x0 = env.step(np.array([1.0], dtype=np.float32))[4]["labels"]["x"]
    x1 = env.step(np.array([1.0], dtype=np.float32))[4]["labels"]["x"]
    assert abs((x1 - x0) - 0.1) < 1e-9


def test_l1_loss_value():
    out = {"pred": torch.tensor([1.0, 2.0]), "target": torch.tensor([0.0, 4.0])}
    assert float(L1Loss()(out, {})) == 1.5


def test_registered_through_entry_point():
    import wm_framework

    wm_framework.reset_registry()
    env = wm_framework.make_env("drift_walk", max_steps=5)
    assert env.label_names == ["x"]
    assert "example_l1" in wm_framework.components("losses")
