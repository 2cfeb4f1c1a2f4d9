"""A damaged episode index is found and never overwritten (issue 25, point 2).

Before: a deleted ``episodes/ends`` chunk, a negative or non-increasing end gave
``ok: 0 episodes`` (exit 0) and the next collect overwrote every episode; a deleted
``episodes/seed`` chunk passed (every seed read 0); a malformed root attribute or a
chunk symlinked out of the store was exit 1 naming no array.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import zarr

from wm_framework.cli import main as wm_main
from wm_framework.data.collect import collect
from wm_framework.data.store import EpisodeStore

ENV = {"type": "linear_state"}
POLICIES = [{"type": "random"}]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("index") / "s.zarr"
    collect(path, ENV, POLICIES, episodes=5, max_steps=6, progress=False)
    return path


def _set_ends(index: int, value: int):
    def damage(p: Path) -> None:
        arr = zarr.open_group(str(p), mode="r+")["episodes/ends"]
        arr[index] = value
    return damage


def _set_attr(p: Path) -> None:
    meta = json.loads((p / "zarr.json").read_text())
    action = meta["attributes"]["action"]
    action["n" if action["type"] == "discrete" else "dim"] = "four"
    (p / "zarr.json").write_text(json.dumps(meta))


def _symlink_chunk(p: Path) -> None:
    chunk = p / "reward" / "c" / "0"
    outside = p.parent / "outside_chunk"
    shutil.copy(chunk, outside)
    chunk.unlink()
    chunk.symlink_to(outside)


DAMAGE = {
    "deleted ends chunk": (lambda p: (p / "episodes" / "ends" / "c" / "0").unlink(), "episodes/ends"),
    "non-increasing end": (_set_ends(2, 3), "episodes/ends"),
    "negative end": (_set_ends(0, -5), "episodes/ends"),
    "deleted seed chunk": (lambda p: (p / "episodes" / "seed" / "c" / "0").unlink(), "episodes/seed"),
    "deleted policy chunk": (lambda p: (p / "episodes" / "policy" / "c" / "0").unlink(), "episodes/policy"),
    "malformed root attribute": (_set_attr, "attribute action."),
    "chunk symlinked outside": (_symlink_chunk, "reward"),
}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and not f.is_symlink():
            h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_index_fails_validation_and_collect_refuses_to_overwrite(pristine, tmp_path, capsys, name):
    damage, array = DAMAGE[name]
    path = tmp_path / "s.zarr"
    shutil.copytree(pristine, path, symlinks=True)
    assert wm_main(["data", "validate", str(path)]) == 0  # control: intact before the damage
    capsys.readouterr()
    damage(path)
    before = _digest(path)
    assert wm_main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert array in err and "Traceback" not in err, (name, err)
    code = wm_main(["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "8",
                    "--max-steps", "6", "--out", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and array in err and "Traceback" not in err, (name, code, err)
    assert _digest(path) == before  # nothing written


def test_interrupted_commit_is_not_damage(pristine, tmp_path, capsys):
    """Control: the trace a kill inside a commit leaves (index resized, values still the fill
    0) validates and is dropped by the next collect, which tops the store up."""
    path = tmp_path / "s.zarr"
    shutil.copytree(pristine, path)
    ends = zarr.open_group(str(path), mode="r+")["episodes/ends"]
    ends.resize((ends.shape[0] + 2,))  # what a kill between resize and write leaves
    assert wm_main(["data", "validate", str(path)]) == 0
    store = collect(path, ENV, POLICIES, episodes=7, max_steps=6, progress=False)
    assert store.num_episodes == 7 and wm_main(["data", "validate", str(path)]) == 0


def test_store_half_created_by_an_older_version_is_completed(tmp_path):
    """A root zarr.json and some empty arrays (what a kill during in-place creation left):
    holds nothing, so the next collect completes it instead of failing forever."""
    path = tmp_path / "s.zarr"
    zarr.open_group(str(path), mode="w").create_array("reward", shape=(0,), dtype="float32")
    store = collect(path, ENV, POLICIES, episodes=2, max_steps=6, progress=False)
    assert store.num_episodes == 2
    assert EpisodeStore.open(path).num_episodes == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".creating")]
