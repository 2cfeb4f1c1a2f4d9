"""The Breakout data recipe validates, and its --smoke collection writes labelled episodes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ale_py")

from wm_framework.recipe import load_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "breakout_data.toml"
POLICIES = ["center", "heuristic", "passive", "random_active", "wall_hugger"]


def test_recipe_validates_at_reference_scale():
    recipe = load_recipe(RECIPE)
    assert recipe.stages == ["data"]
    d = recipe.data
    assert (d.train, d.test) == ("data/breakout_train.zarr", "data/breakout_test.zarr")
    assert [p["type"] for p in d.collect.policies] == POLICIES
    assert [p["type"] for p in d.collect_test.policies] == ["heuristic", "random_active"]
    assert d.collect_test.seed != d.collect.seed and d.collect.episodes >= 10


def test_smoke_collection_stores_labels(tmp_path):
    from wm_framework.collect import collect
    from wm_framework.data.store import EpisodeStore

    recipe = load_recipe(RECIPE, smoke=True)
    cfg = recipe.data.collect
    assert cfg.env["obs_size"] == [64, 64] and cfg.episodes == 1 and cfg.max_steps <= 50
    out = tmp_path / "train.zarr"
    collect(str(out), env=cfg.env, policies=cfg.policies, episodes=cfg.episodes, max_steps=cfg.max_steps,
            workers=1, seed=cfg.seed, progress=False)
    store = EpisodeStore.open(str(out))
    assert sorted(store.episode_policy.tolist()) == POLICIES
    assert store.label_names[:3] == ["ball_x", "ball_y", "paddle_x"]
    assert store.obs_shape == (64, 64, 3)
    ep = store.episode(list(store.episode_policy).index("heuristic"))
    ball_x, paddle_x = ep["labels/ball_x"], ep["labels/paddle_x"]
    assert math.isnan(ball_x[0]) and np.isfinite(paddle_x).all()  # no ball before the serve
    assert np.isfinite(ball_x).sum() > 5 and ((0 <= paddle_x) & (paddle_x < 64)).all()
