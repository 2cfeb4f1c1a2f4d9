"""EpisodeStore / StoreWriter: round trip, append, interrupted commits, one-line errors."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import zarr

from _data_util import make_row_store, row_episode
from wm_framework.data.inspect import validate_store
from wm_framework.data.store import EpisodeStore
from wm_framework.data.writer import StoreWriter
from wm_framework.errors import WMUsageError

SPEC = dict(env={"name": "synthetic", "params": {}}, obs_spec={"key": "pixels", "shape": [4, 4, 2], "dtype": "uint8"},
            action_spec={"type": "discrete", "n": 5}, label_names=["row", "half"])


@pytest.mark.parametrize("discrete", [True, False])
def test_round_trip(tmp_path, discrete):
    path = tmp_path / "s.zarr"
    make_row_store(path, [5, 3, 7], policies=["a", "b"], discrete=discrete)
    s = EpisodeStore.open(path)
    assert (s.num_episodes, s.num_frames) == (3, 15)
    assert s.episode_ends.tolist() == [5, 8, 15] and s.episode_starts.tolist() == [0, 5, 8]
    assert s.episode_lengths.tolist() == [5, 3, 7]
    assert s.episode_policy.tolist() == ["a", "b", "a"] and s.episode_seed.tolist() == [0, 1, 2]
    assert s.obs_key == "obs/pixels" and s.obs_shape == (4, 4, 2) and s.label_names == ["row", "half"]
    want = row_episode(5, 3, discrete)
    got = s.episode(1)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_array_equal(s.read("labels/row", 4, 9), np.arange(4, 9, dtype=np.float32))
    assert s.read("obs", 0, 2).dtype == np.uint8
    assert validate_store(str(path)) == []
    with pytest.raises(WMUsageError, match="outside"):
        s.read("reward", 10, 16)


def test_append_reopens_and_rejects_incompatible(tmp_path):
    path = tmp_path / "s.zarr"
    make_row_store(path, [4, 4])
    w = StoreWriter(path, **SPEC)
    assert w.num_episodes == 2
    w.append_episode(row_episode(8, 6), "c", seed=9)
    s = EpisodeStore.open(path)
    assert s.episode_lengths.tolist() == [4, 4, 6] and s.episode_policy[-1] == "c"
    with pytest.raises(WMUsageError, match="incompatible: its env"):
        StoreWriter(path, **{**SPEC, "env": {"name": "other", "params": {}}})
    with pytest.raises(WMUsageError, match="'action' has rows"):
        bad = row_episode(0, 3)
        bad["action"] = np.zeros((3, 2), np.int64)
        w.append_episode(bad, "c", 0)


def test_interrupted_commit_leaves_only_complete_episodes(tmp_path):
    """A kill after the rows (and even inside the index commit) must not show a half episode."""
    path = tmp_path / "s.zarr"
    make_row_store(path, [4, 6])
    g = zarr.open_group(str(path), mode="r+")
    for name in ("obs/pixels", "action", "reward", "labels/row"):  # rows of a 3rd episode, half written
        a = g[name]
        a.resize((13, *a.shape[1:]))
    g["episodes/policy"].resize((3,))
    g["episodes/ends"].resize((3,))  # resized, value never written: fill value 0
    s = EpisodeStore.open(path)
    assert (s.num_episodes, s.num_frames) == (2, 10)
    assert validate_store(str(path)) == []
    w = StoreWriter(path, **SPEC)  # recovers, then overwrites the trailing rows
    w.append_episode(row_episode(10, 2), "a", seed=5)
    s = EpisodeStore.open(path)
    assert s.episode_ends.tolist() == [4, 10, 12]
    np.testing.assert_array_equal(s.episode(2)["labels/row"], [10, 11])
    assert validate_store(str(path)) == []


def _drop(g, name):
    import shutil

    shutil.rmtree(os.path.join(g.store.root, name))


@pytest.mark.parametrize("breakage,expected", [
    (lambda g: _drop(g, "reward"), "missing array 'reward'"),
    (lambda g: g["labels/half"].resize((3,)), "array 'labels/half' has 3 rows but the episode index needs 9"),
    (lambda g: g.create_array("terminated", shape=(9,), dtype="int32", overwrite=True), "array 'terminated' has dtype int32"),
    (lambda g: g.attrs.update({"schema_version": 99}), "schema_version 99"),
    (lambda g: g["episodes/seed"].resize((1,)), "array 'episodes/seed' has 1 entries for 2 episodes"),
    (lambda g: g.create_array("episodes/ends", shape=(2,), dtype="int32", overwrite=True), "'episodes/ends' has dtype int32"),
])
def test_corrupted_store_gives_one_line_error(tmp_path, breakage, expected):
    path = tmp_path / "s.zarr"
    make_row_store(path, [4, 5])
    breakage(zarr.open_group(str(path), mode="r+"))
    with pytest.raises(WMUsageError) as err:
        EpisodeStore.open(path)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert validate_store(str(path)) and expected in validate_store(str(path))[0]


def test_not_a_store(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(WMUsageError, match="not a Zarr episode store"):
        EpisodeStore.open(tmp_path / "plain")
    with pytest.raises(WMUsageError, match="does not exist"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(WMUsageError, match="no 'schema_version'"):
        EpisodeStore.open(tmp_path / "g.zarr")


def test_validate_finds_corrupt_chunk_and_bad_structure(tmp_path):
    path = tmp_path / "s.zarr"
    make_row_store(path, [4, 5])
    chunk = glob.glob(str(path / "obs" / "pixels" / "c" / "**" / "*"), recursive=True)
    chunk = [c for c in chunk if os.path.isfile(c)][0]
    with open(chunk, "wb") as f:
        f.write(b"not zstd at all")
    problems = validate_store(str(path))
    assert len(problems) == 1 and "array 'obs/pixels'" in problems[0] and "decode" in problems[0]
    path2 = tmp_path / "t.zarr"
    make_row_store(path2, [4, 5])
    g = zarr.open_group(str(path2), mode="r+")
    g["terminated"][3] = False  # episode 0 no longer ends
    g["action"][6] = 99  # out of range
    problems = validate_store(str(path2))
    assert any("episode 0 has neither flag" in p for p in problems)
    assert any("row 6 holds an invalid action" in p for p in problems)


def test_reading_a_chunk_that_does_not_fit_its_metadata_names_the_array(tmp_path):
    """Before: an edited chunk shape in zarr.json made `wm run` fail with numpy's "cannot
    reshape array" (exit 1); reading now names the store, the array and the rows."""
    import json

    path = tmp_path / "s.zarr"
    make_row_store(path, [4, 5])
    meta_file = path / "obs" / "pixels" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["chunk_grid"]["configuration"]["chunk_shape"][0] = 3
    meta_file.write_text(json.dumps(meta))
    store = EpisodeStore.open(path)
    with pytest.raises(WMUsageError, match=r"array 'obs/pixels' rows 0-9 cannot be decoded \(ValueError: ") as err:
        store.read("obs", 0, 9)
    assert "\n" not in str(err.value) and "wm data validate" in str(err.value)


def test_store_pickles_without_zarr_handles(tmp_path):
    import pickle

    path = tmp_path / "s.zarr"
    make_row_store(path, [3, 3])
    s = EpisodeStore.open(path)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._arrays == {} and s2.num_episodes == 2
    np.testing.assert_array_equal(s2.read("labels/row", 0, 6), np.arange(6))


def test_whole_chunk_writer_writes_what_zarr_reads(tmp_path):
    from wm_framework.data import writer as writer_mod
    from wm_framework.data.writer import WholeChunkWriter, whole_chunk_span

    path = tmp_path / "w.zarr"
    orig = writer_mod.CHUNK_BYTES
    writer_mod.CHUNK_BYTES = 4 * 4 * 2 * 5  # 5-row chunks
    try:
        w = StoreWriter(path, **SPEC)
    finally:
        writer_mod.CHUNK_BYTES = orig
    assert whole_chunk_span(3, 18, 5) == (5, 15) and whole_chunk_span(6, 9, 5) == (6, 6)
    n0 = w.reserve(23, headroom=7)
    assert n0 == 0 and w.arrays["obs/pixels"].shape[0] == 30
    ep = row_episode(100, 23)
    chunks = WholeChunkWriter(path, "obs/pixels")
    assert chunks.enabled and chunks.chunk_rows == 5
    assert not WholeChunkWriter(path, "reward").enabled  # float32: left to the writer
    chunks.write(5, ep["obs"][5:20])
    with pytest.raises(ValueError, match="whole chunks"):
        chunks.write(3, ep["obs"][3:8])
    w.write_rows(0, {"obs/pixels": ep["obs"][:5]})
    w.write_rows(20, {"obs/pixels": ep["obs"][20:]})
    w.write_rows(0, {k: v for k, v in ep.items() if k != "obs"})
    w.commit([("p", 1, 23)])
    w.trim()
    s = EpisodeStore.open(path)
    assert s.zarr_array("obs").shape[0] == 23
    np.testing.assert_array_equal(s.episode(0)["obs"], ep["obs"])
