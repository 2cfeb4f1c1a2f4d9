"""Probes, R^2, baselines and the probing study on tiny synthetic data and tiny real stores (CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score as sk_r2
from torch import nn

from wm_framework.errors import WMUsageError
from wm_framework.model import ActionSpec, WorldModel
from wm_framework.stages.probe.probes import (ProbeConfig, ProbeTask, make_linear_probe, make_mlp_probe, make_ridge_probe, r2_score,
                                task_preset)
from wm_framework.stages.probe.features import extract_features, resolve_frame, task_rows
from wm_framework.stages.probe.study import probe_study, report_markdown, run_probe_stage, static_baseline

torch.set_num_threads(1)
FAST = dict(lr=1e-2, max_epochs=80, patience=5)  # quick; the linear test below uses the defaults


# ----------------------------------------------------------------------------- fakes
class FakeSampler:
    """In-memory stand-in for WindowSampler: fixed windows served in order."""

    def __init__(self, batch: dict):
        self.batch = batch

    def iter_batches(self, batch_size):
        n = len(self.batch["obs"])
        for s in range(0, n, batch_size):
            yield {k: v[s:s + batch_size] for k, v in self.batch.items()}


def random_walk_windows(n, window=4, seed=0, step=0.3, nan_frac=0.0):
    """States [n, L, 3]: (x, y, noise); x, y random walks from N(0,1); labels x, y, x^2-ish."""
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(n, 1, 2))
    walk = start + np.concatenate([np.zeros((n, 1, 2)), np.cumsum(rng.normal(scale=step, size=(n, window - 1, 2)), 1)], 1)
    noise = rng.normal(size=(n, window, 1))
    obs = np.concatenate([walk, noise], -1).astype(np.float32)
    action = rng.integers(0, 3, size=(n, window, 1)).astype(np.int64)
    labels = {"labels/x": obs[..., 0].copy(), "labels/y": obs[..., 1].copy(),
              "labels/noise": rng.normal(size=(n, window)).astype(np.float32)}
    if nan_frac:
        labels["labels/x"][rng.random(n) < nan_frac, :] = np.nan
    return {"obs": obs, "action": action, **labels}


class CountingEncoder(nn.Module):
    def __init__(self, d_in=3, d=16, with_pooling=False):
        super().__init__()
        self.lin = nn.Linear(d_in, d)
        self.out_dim = d
        self.calls = 0
        if with_pooling:
            self.poolings = ("cls", "mean")  # features(obs, pooling="mean") is offered

    def forward(self, obs):
        self.calls += 1
        return torch.tanh(self.lin(obs))

    def features(self, obs, pooling=None):  # not counted: `calls` counts the forward passes
        return torch.tanh(self.lin(obs)) if pooling in (None, "cls") else self.lin(obs)


class TinyPredictor(nn.Module):
    def __init__(self, d=16, a=3):
        super().__init__()
        self.lin = nn.Linear(d + a, d)

    def forward(self, z, a):
        return self.lin(torch.cat([z, a], -1))


def tiny_model(seed=0, **enc_kw):
    torch.manual_seed(seed)
    return WorldModel(CountingEncoder(**enc_kw), TinyPredictor(), ActionSpec("discrete", 3, 1)).eval()


def factories(*names, **kw):
    table = {"linear": make_linear_probe, "mlp": make_mlp_probe}
    return {n: (lambda n=n: table[n](**{**FAST, **kw})) for n in names}


# ----------------------------------------------------------------------------- R^2 and probes
def test_r2_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(200, 3))
    pred = y + rng.normal(scale=0.7, size=y.shape)
    pred[:, 2] = rng.normal(size=200)  # a dim with negative R^2
    mean, per = r2_score(y, pred)
    assert mean == pytest.approx(sk_r2(y, pred), abs=1e-12)
    assert per == pytest.approx(list(sk_r2(y, pred, multioutput="raw_values")), abs=1e-12)
    assert r2_score(y[:, 0], pred[:, 0])[0] == pytest.approx(sk_r2(y[:, 0], pred[:, 0]), abs=1e-12)
    const = np.ones((10, 1))
    assert r2_score(const, const)[0] == sk_r2(const, const) == 1.0
    assert r2_score(const, const * 2)[0] == sk_r2(const, const * 2) == 0.0


def _split(x, y, n_train):
    return x[:n_train], y[:n_train], x[n_train:]


def test_linear_probe_r2_one_on_linear_target_and_zero_on_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 8)).astype(np.float32)
    y = x @ rng.normal(size=(8, 2)) + 3.0
    p = make_linear_probe()  # shipped defaults (lr 1e-3) must converge on a small set
    p.fit(x[:1000], y[:1000], x[1000:1250], y[1000:1250])
    assert r2_score(y[1250:], p.predict(x[1250:]))[0] > 0.999
    noise = rng.normal(size=1500).astype(np.float32)
    p = make_linear_probe(**FAST)
    p.fit(x[:1000], noise[:1000], x[1000:1250], noise[1000:1250])
    pred = p.predict(x[1250:])
    assert pred.shape == (250,)
    assert abs(r2_score(noise[1250:], pred)[0]) < 0.05


def test_mlp_beats_linear_on_nonlinear_target_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(2000, 2)).astype(np.float32)
    y = x[:, 0] ** 2 - np.abs(x[:, 1])  # symmetric: nothing for a linear map to find
    scores = {}
    for name, make in (("linear", make_linear_probe), ("mlp", make_mlp_probe)):
        p = make(**FAST)
        p.fit(x[:1400], y[:1400], x[1400:1700], y[1400:1700])
        scores[name] = r2_score(y[1700:], p.predict(x[1700:]))[0]
    assert scores["mlp"] > 0.9 and scores["linear"] < 0.1, scores
    preds = []
    for _ in range(2):
        p = make_mlp_probe(seed=3, max_epochs=5)
        p.fit(x[:500], y[:500], x[500:600], y[500:600])
        preds.append(p.predict(x[1700:]))
    np.testing.assert_array_equal(preds[0], preds[1])


def test_ridge_probe_matches_sklearn_ridge_in_primal_and_dual_form():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    for n, d in ((400, 50), (100, 300)):  # primal (N > D) and dual (N < D) branches
        x = rng.normal(size=(n + 200, d)).astype(np.float32)
        y = x[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.normal(size=n + 200)
        p = make_ridge_probe(alphas=(0.01, 1.0, 100.0))
        info = p.fit(x[:n], y[:n], x[n:n + 100], y[n:n + 100])
        sx, sy = StandardScaler().fit(x[:n]), StandardScaler().fit(y[:n, None])
        ref = Ridge(alpha=info["alpha"]).fit(sx.transform(x[:n]), sy.transform(y[:n, None]))
        expected = sy.inverse_transform(ref.predict(sx.transform(x[n + 100:])).reshape(-1, 1))[:, 0]
        np.testing.assert_allclose(p.predict(x[n + 100:]), expected, rtol=1e-3, atol=1e-3)
        if n > d:
            assert r2_score(y[n + 100:], p.predict(x[n + 100:]))[0] > 0.99


# ----------------------------------------------------------------------------- tasks and features
def test_probe_config_validation_and_offsets_in_env_steps():
    tasks = ProbeConfig(tasks="breakout").resolved_tasks(["ball_x", "ball_y", "ball_vx", "ball_vy", "paddle_x"], 5)
    # The six published tasks, then the model-gap variants of the two with a nonzero offset.
    assert [(t.name, t.offset) for t in tasks][-2:] == [("ball_pos_pred@5", 5), ("ball_vel_pred@5", 5)]
    assert ProbeConfig(tasks="breakout", model_gap=False).resolved_tasks(None, 5) == task_preset("breakout")[0]
    assert ProbeConfig(tasks="breakout").resolved_reference().static["ball_pos"] == 0.955  # the preset's figures
    assert ProbeConfig(tasks=[{"name": "ball_pos", "targets": ["ball_x"]}]).resolved_reference() is None
    with pytest.raises(ValueError, match="unknown probe preset 'breakuot'; registered: breakout"):
        ProbeConfig(tasks="breakuot")
    with pytest.raises(WMUsageError, match="ball_vx"):
        ProbeConfig(tasks="breakout").resolved_tasks(["ball_x", "ball_y", "paddle_x"])
    auto = ProbeConfig().resolved_tasks(["x"], frameskip=3)
    assert [(t.name, t.features, t.offset) for t in auto] == [("x", "encoder", 0), ("x_pred", "predictor", 3)]
    with pytest.raises(Exception, match="offset"):  # the old frame-counted `shift` is refused, with the fix
        ProbeTask(name="a", targets=["x"], shift=1)
    with pytest.raises(WMUsageError, match="outside"):
        resolve_frame(4, 4)
    with pytest.raises(Exception):
        ProbeConfig(tasks=[{"name": "a", "features": "decoder", "targets": ["x"]}])
    assert all(f.description for f in ProbeConfig.model_fields.values())
    assert all(f.description for f in ProbeTask.model_fields.values())


def test_nan_targets_are_masked_not_filled():
    data = random_walk_windows(300, nan_frac=0.3)
    fs = extract_features(tiny_model(), FakeSampler(data), {"encoder"}, frame=2, window=4, batch_size=64)
    x, y, _ = task_rows(fs, ProbeTask(name="x", targets=["x", "y"]), None)
    finite = np.isfinite(data["labels/x"][:, 2])
    assert len(y) == finite.sum() < 300 and np.isfinite(y).all()
    np.testing.assert_array_equal(y[:, 0], data["labels/x"][finite, 2])
    res = probe_study([{"label": "c", "load": tiny_model}],
                      {s: FakeSampler(random_walk_windows(300, seed=i, nan_frac=0.3)) for i, s in enumerate(("train", "val", "test"))},
                      [ProbeTask(name="x", targets=["x"])], factories("linear"), window=4)
    entry = res["checkpoints"][0]["tasks"]["x"]["linear"]
    assert entry["test"]["n"] < 300 and np.isfinite(entry["test"]["r2"])


def test_static_persistence_matches_random_walk_theory():
    # x_t = x_0 + t steps of N(0, s^2), x_0 ~ N(0, 1): Var(x_t) = 1 + t s^2 and copying x_t as
    # x_{t+1} leaves residual variance s^2, so R^2 = 1 - s^2 / (1 + (t+1) s^2).
    s, t = 0.6, 2
    data = random_walk_windows(40000, window=4, step=s, seed=5)
    fs = extract_features(None, FakeSampler(data), set(), frame=t, window=4, batch_size=4096)
    res = static_baseline({"val": fs, "test": fs}, [ProbeTask(name="x", targets=["x"], offset=1),
                                                    ProbeTask(name="x0", targets=["x"], offset=0)], protocol_gap=1)
    expected = 1 - s**2 / (1 + (t + 1) * s**2)
    assert res["x"]["test"]["r2"] == pytest.approx(expected, abs=0.01)
    assert res["x0"]["test"]["r2"] == pytest.approx(expected, abs=0.01)  # offset 0: copy t as t+1
    lo, hi = res["x"]["test"]["ci95"]  # rows resampled (no episodes known): a tight interval around it
    assert lo < res["x"]["test"]["r2"] < hi and hi - lo < 0.02


def test_r2_interval_resamples_episodes_not_rows():
    from wm_framework.stages.probe.stats import r2_interval

    # 10 episodes of 200 near-identical rows each: the prediction error is shared within an
    # episode, so the rows are not 2000 independent samples and the interval must say so.
    rng = np.random.default_rng(0)
    episodes = np.repeat(np.arange(10), 200)
    y = rng.normal(size=2000)
    pred = y + np.repeat(rng.normal(scale=0.5, size=10), 200)
    by_row = r2_interval(y, pred, None, n_boot=300)
    by_episode = r2_interval(y, pred, episodes, n_boot=300)
    assert by_episode[1] - by_episode[0] > 3 * (by_row[1] - by_row[0])
    assert r2_interval(y, pred, episodes, n_boot=300) == by_episode  # seeded: deterministic
    assert r2_interval(y[:800], pred[:800], episodes[:800]) is None  # 4 episodes: no honest interval


def test_features_once_per_checkpoint_and_no_gradient_into_model():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tasks = [ProbeTask(name="pos", features="encoder", targets=["x", "y"]),
             ProbeTask(name="pos_pred", features="predictor", targets=["x"], offset=1),
             ProbeTask(name="pos_act", features="encoder+action", targets=["y"], offset=1)]
    samplers = {s: FakeSampler(random_walk_windows(256, seed=i)) for i, s in enumerate(("train", "val", "test"))}
    res = probe_study([{"label": "epoch_1", "epoch": 1, "load": lambda: model}], samplers, tasks,
                      factories("linear", "mlp"), window=4, batch_size=64)
    # 3 splits x 4 batches, one encoder call per batch whatever the number of tasks and probes.
    assert model.encoder.calls == 3 * 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    out = res["checkpoints"][0]["tasks"]
    assert out["pos"]["linear"]["test"]["r2"] > 0.95  # tanh(linear) of positions: near-linear
    assert set(out["pos"]["mlp"]["test"]["r2_per_dim"]) == {"x", "y"}


def test_baselines_random_init_patch_mean_and_raw_pixels_on_pixels():
    def pixel_windows(n, seed):
        r = np.random.default_rng(seed)
        col = r.integers(0, 16, size=(n, 4))
        obs = np.zeros((n, 4, 8, 16, 3), np.uint8)
        for i in range(n):
            for t in range(4):
                obs[i, t, 2:5, col[i, t]] = 255
        return {"obs": obs, "action": r.integers(0, 3, size=(n, 4, 1)), "labels/x": col.astype(np.float32)}

    class PixEncoder(CountingEncoder):
        def __init__(self):
            super().__init__(d_in=8 * 16 * 3, with_pooling=True)

        def forward(self, obs):
            return super().forward(obs.flatten(2))

        def features(self, obs, pooling=None):
            return super().features(obs.flatten(2), pooling)

    def model():
        torch.manual_seed(0)
        return WorldModel(PixEncoder(), TinyPredictor(), ActionSpec("discrete", 3, 1)).eval()

    samplers = {s: FakeSampler(pixel_windows(200, i)) for i, s in enumerate(("train", "val", "test"))}
    tasks = [ProbeTask(name="x", targets=["x"]), ProbeTask(name="x_pred", features="predictor", targets=["x"], offset=1)]
    res = probe_study([{"label": "epoch_1", "epoch": 1, "load": model}], samplers, tasks, factories("linear"), window=4,
                      baselines=["static", "random_init", "patch_mean", "raw_pixels"], random_model=model, raw_size=(4, 16))
    b = res["baselines"]
    assert b["raw_pixels"]["x"]["ridge"]["test"]["r2"] > 0.9  # the column is visible in the pixels
    assert b["static"]["x"]["test"]["r2"] < 0.2  # independent columns per frame
    assert set(b["patch_mean"]["tasks"]) == {"x"}  # encoder tasks only
    assert "x_pred" in b["random_init"]
    md = report_markdown(res)
    assert "| x |" in md and "raw pixels" in md
    # An encoder without `pooling`: patch_mean is skipped with a note.
    res2 = probe_study([{"label": "c", "load": tiny_model}], {s: FakeSampler(random_walk_windows(64, seed=i)) for i, s in
                                                               enumerate(("train", "val", "test"))},
                       [ProbeTask(name="x", targets=["x"])], factories("linear"), window=4, baselines=["patch_mean"])
    assert "patch_mean" not in res2["baselines"] and any("pooling" in n for n in res2["notes"])


def test_builtin_registration_hooks():
    from wm_framework import builtins as builtin_probes

    got = {}
    builtin_probes.register_probes(lambda name, factory, **meta: got.setdefault(("probes", name), (factory, meta)))
    builtin_probes.register_stages(lambda name, factory, **meta: got.setdefault(("stages", name), (factory, meta)))
    assert {("probes", "linear"), ("probes", "mlp"), ("stages", "probe")} <= set(got)
    assert got[("stages", "probe")][1]["config"].resolve() is ProbeConfig  # lazy: no pydantic at start-up
    assert callable(got[("stages", "probe")][0](tasks="breakout", probes=["linear"]))
    with pytest.raises(Exception):
        got[("stages", "probe")][0](tasks="pong")


# ----------------------------------------------------------------------------- stage glue with a fake RunContext
class FakeContext:
    def __init__(self, path: Path):
        self.path = path
        self.recipe = SimpleNamespace(data=SimpleNamespace(window=4, test=None, frameskip=1, mode="ram"), seed=0)
        self.device = torch.device("cpu")
        self.results_written, self.sections = {}, {}
        self.progress = False  # RunContext's: no progress bar in tests
        self._model = tiny_model()

    @property
    def plots_dir(self):
        (self.path / "plots").mkdir(exist_ok=True)
        return self.path / "plots"

    def stores(self):
        return {"train": SimpleNamespace(label_names=["x", "y", "noise"]), "test": None}

    def splits(self):
        return {"train": np.arange(3), "val": np.arange(1), "holdout": np.arange(1)}

    def resolve_split(self, split):
        return "holdout", "holdout split (policies never trained on: b)"

    def sampler(self, split, length=None):
        return FakeSampler(random_walk_windows(128, window=length, seed={"train": 0, "val": 1, "holdout": 2}[split]))

    def checkpoints(self):
        return [SimpleNamespace(path=f"e{e}.pt", step=10 * e, epoch=float(e), label=f"epoch_{e}") for e in (1, 2)]

    def load_model(self, path, device=None):
        return self._model

    def build_model(self):
        return tiny_model(seed=1)

    def update_results(self, key, value):
        self.results_written[key] = value

    def write_report_section(self, key, title, markdown):
        self.sections[key] = markdown


def test_run_probe_stage_writes_outputs(tmp_path):
    ctx = FakeContext(tmp_path)
    cfg = ProbeConfig(tasks=[{"name": "ball_pos", "targets": ["x", "y"]}, {"name": "n", "targets": ["noise"]}],
                      probes=["linear"], probe_params={"linear": FAST}, baselines=["static", "random_init"])
    run_probe_stage(ctx, cfg, checkpoints=["epoch_2"])
    saved = json.loads((tmp_path / "probes.json").read_text())
    assert [c["label"] for c in saved["checkpoints"]] == ["epoch_2"]
    assert saved["test_set"] == "holdout split (policies never trained on: b)"
    summary = ctx.results_written["probes"]
    pos = summary["tasks"]["ball_pos"]["linear"]["epoch_2"]
    assert pos["r2"] > 0.9 and pos["n"] == 128 and pos["ci95"][0] <= pos["r2"] <= pos["ci95"][1]
    assert abs(summary["tasks"]["n"]["linear"]["epoch_2"]["r2"]) < 0.2
    static = summary["baselines"]["static"]["ball_pos"]
    assert static["gap"] == 1 and static["n"] == 128 and len(static["ci95"]) == 2  # n and spread for every number
    md = ctx.sections["probe"]
    assert "published" not in md  # custom tasks: no published column unless a reference is given
    cfg_ref = cfg.model_copy(update={"reference": ProbeConfig(reference={
        "label": "their paper", "offsets": {"ball_pos": 0}, "r2": {"linear": {"ball_pos": {"100": 0.301}}}}).reference})
    run_probe_stage(ctx, cfg_ref, checkpoints=["epoch_2"])
    md = ctx.sections["probe"]
    assert "| their paper |" in md  # the column is headed with the reference's label
    assert "ep100: +0.301" in md  # the given figure next to the matching task (same offset)
    assert (tmp_path / "plots" / "probe_r2.png").stat().st_size > 1000
    with pytest.raises(WMUsageError, match="epoch_7"):
        run_probe_stage(ctx, cfg, checkpoints=["epoch_7"])


def test_real_zarr_store_and_window_sampler(tmp_path):
    """Features and labels through the real StoreWriter -> EpisodeStore -> WindowSampler path."""
    from wm_framework.data.sampler import WindowSampler
    from wm_framework.data.store import EpisodeStore
    from wm_framework.data.writer import StoreWriter

    rng = np.random.default_rng(0)
    path = tmp_path / "walk.zarr"
    with StoreWriter(path, env={"name": "walk"}, obs_spec={"key": "state", "shape": [3], "dtype": "float32"},
                     action_spec={"type": "discrete", "n": 3}, label_names=["x", "y"]) as w:
        for ep in range(6):
            t = 30
            obs = np.cumsum(rng.normal(size=(t + 1, 3)), 0).astype(np.float32)
            action = np.concatenate([rng.integers(0, 3, t), [-1]]).astype(np.int64)
            w.append_episode({"obs": obs, "action": action, "reward": np.zeros(t + 1, np.float32),
                              "terminated": np.eye(1, t + 1, t, dtype=bool)[0], "truncated": np.zeros(t + 1, bool),
                              "labels/x": obs[:, 0], "labels/y": obs[:, 1]}, policy="random", seed=ep)
    store = EpisodeStore.open(str(path))
    sampler = WindowSampler(store, np.arange(6), 4, 1, mode="ram")
    model = tiny_model()
    fs = extract_features(model, sampler, {"encoder", "predictor"}, frame=2, window=4, batch_size=32, max_rows=50)
    assert fs.n == 50 and fs.features["predictor"].shape == (50, 16)
    # Labels at the probed frame are the state the encoder saw there (row convention).
    x_enc, y, episodes = task_rows(fs, ProbeTask(name="x", targets=["x"]), None)
    with torch.no_grad():
        first = next(iter(sampler.iter_batches(len(sampler), shuffle=True, seed=0)))
    np.testing.assert_allclose(fs.labels["x"][:, 0], first["obs"][:50, 2, 0], rtol=1e-6)
    np.testing.assert_array_equal(episodes, first["episode"][:50])
    np.testing.assert_allclose(y[:, 0], first["obs"][:50, 2, 0], rtol=1e-6)
