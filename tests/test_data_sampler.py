"""WindowSampler and split_episodes: windows stay inside episodes, modes agree, workers work."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from _data_util import N_ACTIONS, global_row, make_row_store
from wm_framework.data.sampler import WindowSampler, split_episodes
from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError

LENGTHS = [9, 4, 17, 12, 6, 30, 11, 8]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampler") / "s.zarr"
    make_row_store(path, LENGTHS, policies=["a", "b", "c"])
    return EpisodeStore.open(path)


@pytest.mark.parametrize("length,fs", [(1, 1), (3, 1), (4, 3), (2, 5)])
def test_windows_stay_inside_episodes_and_match_raw_rows(store, length, fs):
    eps = np.arange(store.num_episodes)
    sampler = WindowSampler(store, eps, length=length, frameskip=fs, mode="ram")
    span = (length - 1) * fs
    assert len(sampler) == sum(max(n - span, 0) for n in LENGTHS)
    b = sampler.get(np.arange(len(sampler)))
    assert b["obs"].shape == (len(sampler), length, 4, 4, 2) and b["action"].shape == (len(sampler), length, fs)
    assert b["labels/row"].shape == (len(sampler), length) and b["action"].dtype == np.int64
    start = store.episode_starts[b["episode"]] + b["t0"]
    rows = global_row(b["obs"])
    np.testing.assert_array_equal(rows, start[:, None] + fs * np.arange(length))
    np.testing.assert_array_equal(b["labels/row"], rows)
    # every frame inside its own episode
    assert (rows < store.episode_ends[b["episode"]][:, None]).all()
    # action block k = raw actions at rows s+k*fs .. s+(k+1)*fs-1, padding (-1) at/after the last row
    act_rows = start[:, None, None] + np.arange(length * fs).reshape(length, fs)
    last = store.episode_ends[b["episode"]][:, None, None] - 1
    expected = np.where(act_rows < last, (act_rows * 7) % N_ACTIONS, -1)
    np.testing.assert_array_equal(b["action"], expected)
    # every window appears exactly once
    assert len({(e, t) for e, t in zip(b["episode"], b["t0"])}) == len(sampler)


def test_continuous_actions_are_padded_with_nan(tmp_path):
    make_row_store(tmp_path / "c.zarr", [5, 7], discrete=False)
    s = WindowSampler(EpisodeStore.open(tmp_path / "c.zarr"), [0, 1], length=2, frameskip=3)
    b = s.get(np.arange(len(s)))
    assert b["action"].shape == (len(s), 2, 3, 2) and b["action"].dtype == np.float32
    first = b["episode"] == 0  # episode 0: rows 0..4, actions at rows 0..3
    w = np.flatnonzero(first & (b["t0"] == 1))[0]  # frames at rows 1, 4; blocks rows 1-3, 4-6
    np.testing.assert_array_equal(b["action"][w, 0, :, 0], [1, 2, 3])
    assert np.isnan(b["action"][w, 1]).all()


def test_ram_and_cache_modes_return_identical_batches(tmp_path, monkeypatch):
    import wm_framework.data.writer as writer

    monkeypatch.setattr(writer, "CHUNK_BYTES", 32 * 10)  # 10 rows per obs chunk: many chunks
    make_row_store(tmp_path / "s.zarr", LENGTHS)
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.chunk_rows("obs") == 10
    eps = [0, 2, 3, 5, 7]
    ram = WindowSampler(store, eps, length=3, frameskip=2, mode="ram")
    cache = WindowSampler(store, eps, length=3, frameskip=2, mode="cache", ram_limit_bytes=3 * 320)
    assert (ram.mode, cache.mode) == ("ram", "cache")
    for a, b in zip(ram.iter_batches(7, shuffle=True, seed=3), cache.iter_batches(7, shuffle=True, seed=3)):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    sa, sb = ram.sample(16, np.random.default_rng(1)), cache.sample(16, np.random.default_rng(1))
    np.testing.assert_array_equal(sa["obs"], sb["obs"])
    assert cache._cache_bytes <= 3 * 320  # the LRU cache respects its budget
    auto = WindowSampler(store, eps, length=3, frameskip=2, ram_limit_bytes=10)
    assert auto.mode == "cache"


def test_iter_batches_covers_every_window_once(store):
    s = WindowSampler(store, [1, 2, 5], length=2, frameskip=2, labels=["row"])
    seen = np.concatenate([np.stack([b["episode"], b["t0"]], 1) for b in s.iter_batches(5, shuffle=True)])
    assert sorted(map(tuple, seen)) == sorted(map(tuple, s.window_index()))
    assert "labels/half" not in s.get([0])


def test_splits_are_by_episode_and_hold_out_policies(store):
    sp = split_episodes(store, val_fraction=0.25, seed=0)
    assert len(np.intersect1d(sp["train"], sp["val"])) == 0 and len(sp["holdout"]) == 0
    assert sorted(np.r_[sp["train"], sp["val"]].tolist()) == list(range(store.num_episodes))
    assert len(sp["val"]) == 2
    assert split_episodes(store, 0.25, seed=0)["val"].tolist() == sp["val"].tolist()
    assert any(split_episodes(store, 0.25, seed=k)["val"].tolist() != sp["val"].tolist() for k in range(1, 6))
    tr = WindowSampler(store, sp["train"], length=3)
    va = WindowSampler(store, sp["val"], length=3)
    assert not set(tr.window_index()[:, 0]) & set(va.window_index()[:, 0])
    ho = split_episodes(store, val_fraction=0.5, seed=1, holdout_policies=["b"])
    assert set(store.episode_policy[ho["holdout"]]) == {"b"} and len(ho["holdout"]) == 3
    assert "b" not in set(store.episode_policy[np.r_[ho["train"], ho["val"]]])
    with pytest.raises(WMUsageError, match="holdout policies \\['zz'\\]"):
        split_episodes(store, holdout_policies=["zz"])


def test_bad_arguments(store):
    with pytest.raises(WMUsageError, match="labels"):
        WindowSampler(store, [0], length=2, labels=["nope"])
    with pytest.raises(WMUsageError, match="no window"):
        WindowSampler(store, [1], length=10).sample(2, np.random.default_rng(0))


def test_sampler_pickles_and_works_in_dataloader_workers(store):
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    s = WindowSampler(store, np.arange(store.num_episodes), length=3, frameskip=2, mode="ram")
    s.get([0])  # loaded in the parent: pickling must not carry the RAM arrays
    blob = pickle.dumps(s)
    assert len(blob) < 20_000
    s2 = pickle.loads(blob)
    np.testing.assert_array_equal(s2.get([3, 1])["obs"], s.get([3, 1])["obs"])
    loader = DataLoader(s, batch_size=8, shuffle=False, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    obs = torch.cat([b["obs"] for b in batches]).numpy()
    assert obs.shape == (len(s), 3, 4, 4, 2)
    np.testing.assert_array_equal(obs, s.get(np.arange(len(s)))["obs"])
