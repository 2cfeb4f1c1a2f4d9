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
    from wm_framework.data.collect import collect
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


# -- held-out test stores (docs/datasets.md "Held-out sets") -------------------------------------
HELD_OUT_RECIPES = ["lewm_breakout", "breakout_data", "breakout_nextframe"]
_stores: dict = {}


def _collect_small(root: Path, cfg, policies=None, episodes: int = 3, steps: int = 200, **env_changes):
    """A recipe's collect table at test size (32 px: the policies play from labels, so the
    games are those of any size), collected once per distinct table."""
    import json

    from wm_framework.data.collect import collect

    env = {**cfg.env, "obs_size": [32, 32], **env_changes}
    env = {k: v for k, v in env.items() if v is not None}
    policies = policies or cfg.policies
    key = json.dumps([env, policies, episodes, steps, cfg.seed], sort_keys=True)
    if key not in _stores:
        _stores[key] = collect(str(root / f"store{len(_stores)}.zarr"), env=env, policies=policies, episodes=episodes,
                               max_steps=steps, workers=1, seed=cfg.seed, progress=False)
    return _stores[key]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("heldout")


@pytest.mark.parametrize("name", HELD_OUT_RECIPES)
def test_recipe_test_store_replays_no_training_window(name, store_root):
    """Real ALE: the recipe's test episodes share no moving 16-frame window with its training
    episodes of the same policies (Breakout is deterministic; a new seed alone replays games)."""
    from wm_framework.data.overlap import window_overlap

    d = load_recipe(RECIPE.with_name(f"{name}.toml")).data
    assert d.collect_test is not None and d.collect_test.seed != d.collect.seed
    test_policies = {p["type"] for p in d.collect_test.policies}
    train = _collect_small(store_root, d.collect, [p for p in d.collect.policies if p["type"] in test_policies])
    test = _collect_small(store_root, d.collect_test, episodes=2)
    report = window_overlap(train, test, window=16)
    assert report.total > 300, report
    assert report.moving_shared == 0, report.describe()


def test_same_settings_without_the_phase_shift_replay_training_windows(store_root):
    """The check above can fail: with the test env of before (no start_noop_frames) fresh seeds
    replay a large share of the training windows."""
    from wm_framework.data.overlap import window_overlap

    d = load_recipe(RECIPE).data
    train = _collect_small(store_root, d.collect, [p for p in d.collect.policies if p["type"] in ("heuristic", "random_active")])
    test = _collect_small(store_root, d.collect_test, episodes=2, start_noop_frames=None)
    assert window_overlap(train, test, window=16).moving_shared > 50


def test_overlap_detects_the_same_episodes_collected_twice(tmp_path):
    """Two stores of the same real episodes: every window of one is in the other."""
    from wm_framework.data.collect import collect
    from wm_framework.data.overlap import window_overlap

    env, pols = {"type": "breakout", "obs_size": [32, 32]}, [{"type": "heuristic"}]
    a = collect(str(tmp_path / "a.zarr"), env=env, policies=pols, episodes=1, max_steps=80, seed=3, progress=False)
    b = collect(str(tmp_path / "b.zarr"), env=env, policies=pols, episodes=1, max_steps=80, seed=3, progress=False)
    report = window_overlap(a, b, window=16)
    assert report.total == 81 - 15 and report.shared == report.total
    assert report.static_shared == report.static_total and report.moving_shared == report.total - report.static_total


def test_start_noop_frames_shift_the_frames_and_stay_reproducible():
    import wm_framework

    plain = wm_framework.make_env("breakout", obs_size=[32, 32])
    shifted = wm_framework.make_env("breakout", obs_size=[32, 32], start_noop_frames=[1, 3])
    fire = 1
    for env in (plain, shifted):
        env.reset(seed=5)
    a = [plain.step(fire)[0] for _ in range(12)]
    b = [shifted.step(fire)[0] for _ in range(12)]
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))  # the ball is seen at other emulator frames
    shifted.reset(seed=5)
    assert all(np.array_equal(x, shifted.step(fire)[0]) for x in b)  # same seed, same frames
    with pytest.raises(Exception, match="start_noop_frames"):
        wm_framework.make_env("breakout", start_noop_frames=[3, 1])
