"""The probe protocol on real stores: what each task reads, at which env-step offset, and
the static baseline's gap on real Breakout data (real Zarr, real ALE emulator; seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from wm_framework.data.sampler import WindowSampler
from wm_framework.data.store import EpisodeStore
from wm_framework.data.writer import StoreWriter
from wm_framework.model import ActionSpec, WorldModel
from wm_framework.stages.probe.probes import ProbeConfig
from wm_framework.stages.probe.features import extract_features, task_rows

BREAKOUT_LABELS = ["ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"]
BASE = {name: 1000.0 * i for i, name in enumerate(BREAKOUT_LABELS)}  # label = base + global row
N_ACTIONS, FRAMESKIP, WINDOW = 4, 5, 4


def _row_store(path, lengths) -> EpisodeStore:
    """Episodes whose observation, action and every label encode the global row number."""
    with StoreWriter(path, env={"name": "rows"}, obs_spec={"key": "state", "shape": [2], "dtype": "float32"},
                     action_spec={"type": "discrete", "n": N_ACTIONS}, label_names=BREAKOUT_LABELS) as w:
        row = 0
        for i, n in enumerate(lengths):
            r = np.arange(row, row + n)
            action = (r % N_ACTIONS).astype(np.int64)
            action[-1] = -1
            ep = {"obs": np.stack([r, np.zeros(n)], 1).astype(np.float32), "action": action,
                  "reward": np.zeros(n, np.float32), "terminated": np.eye(1, n, n - 1, dtype=bool)[0],
                  "truncated": np.zeros(n, bool)}
            ep.update({f"labels/{k}": (BASE[k] + r).astype(np.float32) for k in BREAKOUT_LABELS})
            w.append_episode(ep, policy="rows", seed=i)
            row += n
    return EpisodeStore.open(str(path))


class RowEncoder(nn.Module):
    """Features = the observation: the global row of each frame."""

    out_dim = 2

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, obs):
        return obs


class MarkedPredictor(nn.Module):
    """Output = the input latent + 0.5, so predictor features are told apart from encoder ones."""

    def forward(self, z, a):
        return z + 0.5


def test_breakout_tasks_read_the_published_inputs_and_targets(tmp_path):
    store = _row_store(tmp_path / "rows.zarr", [40, 33, 52])
    sampler = WindowSampler(store, np.arange(3), WINDOW, FRAMESKIP, mode="ram")
    model = WorldModel(RowEncoder(), MarkedPredictor(), ActionSpec("discrete", N_ACTIONS, FRAMESKIP)).eval()
    tasks = ProbeConfig(tasks="breakout").resolved_tasks(BREAKOUT_LABELS, FRAMESKIP)
    fs = extract_features(model, sampler, {"encoder", "predictor"}, frame=2, window=WINDOW, batch_size=16,
                          max_offset=max(t.offset for t in tasks))
    # Row of the probed frame t = 2 of each window: its start row + 2 frames of 5 env steps.
    index = sampler.window_index()
    frame_row = store.episode_starts[index[:, 0]] + index[:, 1] + 2 * FRAMESKIP
    expected = {"ball_pos": ("encoder", 0), "ball_vel": ("encoder", 0), "ball_pos_pred": ("predictor", 1),
                "ball_vel_pred": ("predictor", 1), "paddle_pos": ("encoder", 0), "paddle_pos_act": ("encoder+action", 0),
                "ball_pos_pred@5": ("predictor", 5), "ball_vel_pred@5": ("predictor", 5)}
    assert {t.name: (t.features, t.offset) for t in tasks} == expected
    for task in tasks:
        x, y, episodes = task_rows(fs, task)
        assert len(y) == len(index), task.name  # every target is inside its episode: no row dropped
        np.testing.assert_array_equal(episodes, index[:, 0])
        # Inputs: the features of frame t (the predictor's output there for predictor tasks) ...
        seen_row = x[:, 0] - (0.5 if task.features == "predictor" else 0.0)
        np.testing.assert_array_equal(seen_row, frame_row, err_msg=task.name)
        if task.features == "encoder+action":
            # ... plus the one-hot block of the FRAMESKIP actions taken from frame t on.
            block = x[:, 2:].reshape(len(x), FRAMESKIP, N_ACTIONS)
            taken = (frame_row[:, None] + np.arange(FRAMESKIP)[None]) % N_ACTIONS
            np.testing.assert_array_equal(block.argmax(-1), taken)
            assert x.shape[1] == 2 + FRAMESKIP * N_ACTIONS
        # Targets: each label exactly `offset` env steps (store rows) after frame t.
        for j, name in enumerate(task.targets):
            np.testing.assert_array_equal(y[:, j] - BASE[name], frame_row + task.offset, err_msg=f"{task.name}/{name}")


def test_labels_past_the_episode_end_are_dropped_not_clamped(tmp_path):
    store = _row_store(tmp_path / "rows.zarr", [16, 16])
    sampler = WindowSampler(store, np.arange(2), WINDOW, FRAMESKIP, mode="ram")  # windows span 16 rows: 1 per episode
    fs = extract_features(None, sampler, set(), frame=3, window=WINDOW, max_offset=2)
    assert fs.labels["ball_x"].shape == (2, 3)
    np.testing.assert_array_equal(fs.labels["ball_x"][:, 0], [15, 31])  # the last row of each episode
    assert np.isnan(fs.labels["ball_x"][:, 1:]).all()


# ----------------------------------------------------------------------------- real Breakout
@pytest.fixture(scope="module")
def breakout_store(tmp_path_factory):
    """Real ALE Breakout, the published held-out policies (heuristic + random_active), tiny frames."""
    from wm_framework.data.collect import collect

    path = tmp_path_factory.mktemp("ale") / "breakout.zarr"
    return collect(str(path), env={"type": "breakout", "obs_size": [16, 16]},
                   policies=[{"type": "heuristic"}, {"type": "random_active"}], episodes=3, max_steps=300,
                   workers=1, seed=10_000, progress=False)


def _probe_context(tmp_path, store_path):
    """A real RunContext whose test store is its train store: every training window is replayed."""
    from wm_framework.recipe import validate
    from wm_framework.runs.context import RunContext

    recipe = validate({"name": "gap", "stages": ["probe"],
                       "data": {"train": store_path, "test": store_path, "window": WINDOW, "frameskip": FRAMESKIP,
                                "val_fraction": 0.25}})
    (tmp_path / "run").mkdir()
    return RunContext(tmp_path / "run", recipe, device="cpu")


def test_static_baseline_uses_the_published_one_step_gap_on_real_breakout(breakout_store, tmp_path):
    from wm_framework.stages.probe.study import run_probe_stage

    ctx = _probe_context(tmp_path, str(breakout_store.path))
    cfg = ProbeConfig(tasks="breakout", probes=["linear"], baselines=["static"], bootstrap=50)
    result = run_probe_stage(ctx, cfg)  # no checkpoints: the label baselines only
    static, model_gap = result["baselines"]["static"], result["baselines"]["static_model_gap"]
    # The published static figures (ball_pos 0.955, ball_vel 0.821) are those of a 1-step gap ...
    assert static["ball_pos"]["gap"] == 1 and static["ball_pos"]["test"]["r2"] == pytest.approx(0.955, abs=0.05)
    assert static["ball_vel"]["gap"] == 1 and static["ball_vel"]["test"]["r2"] == pytest.approx(0.821, abs=0.1)
    # ... and the world model's own gap (one window frame, 5 env steps) is far from them.
    assert model_gap["ball_pos"]["gap"] == FRAMESKIP and model_gap["ball_pos"]["test"]["r2"] < 0.8
    lo, hi = static["ball_pos"]["test"]["ci95"]
    assert lo <= static["ball_pos"]["test"]["r2"] <= hi
    md = (ctx.path / "report.md").read_text()
    assert "Offsets are **env steps**" in md and "published (LeWM) static (gap 1)" in md
    assert f"static, model gap ({FRAMESKIP} steps)" in md
    assert "| ball_pos | " in md and "+0.955 |" in md  # comparable: printed plainly
    # The evaluation split is named, and the replayed windows are counted and reported.
    assert f"test store {breakout_store.path}" in md
    saved = json.loads((ctx.path / "results.json").read_text())["probes"]
    train_windows = sum(max(int(breakout_store.episode_lengths[e]) - (WINDOW - 1) * FRAMESKIP, 0)
                        for e in ctx.splits()["train"])
    assert saved["overlap"]["total"] > saved["overlap"]["shared"] >= train_windows > 0
    assert "Train/evaluation overlap: " in md and saved["overlap"]["describe"] in md
    assert saved["offsets"]["ball_pos_pred"] == 1 and saved["offsets"]["paddle_pos_act"] == 0
