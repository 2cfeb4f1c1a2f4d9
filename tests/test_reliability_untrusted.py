"""Untrusted files: checkpoints never unpickle code, weights round-trip through safetensors,
recipes are data only, and importers never read outside the directory they were given."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from _reliability_util import tiny_recipe, tiny_run
from wm_framework.cli import main as wm_main
from wm_framework.errors import WMUsageError
from wm_framework.train.checkpoint import (
    load_checkpoint,
    load_model_weights,
    load_state_dict_strict,
    load_weights_safetensors,
    save_weights_safetensors,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("untrusted"))


def _one_error_line(err: str) -> str:
    """The single `error: ...` line on stderr (stage banners may precede it)."""
    lines = [x for x in err.strip().splitlines() if x.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err and "\x1b" not in lines[0], err
    return lines[0]


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: the stand-in for arbitrary code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _plant(path: Path, marker: Path) -> None:
    state = torch.load(path, weights_only=True) if path.exists() else {}
    state["model"] = {"w": torch.zeros(2), "evil": _Payload(str(marker))}
    torch.save(state, path)


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("fn, args, name", [
    (os.system, ("true",), "system"), (eval, ("1",), "eval"), (exec, ("1",), "exec"),
    (getattr, ("x", "upper"), "getattr"), (pickle.loads, (b"",), "loads"),
])
def test_every_refused_payload_names_its_global_in_one_line(tmp_path, fn, args, name):
    """Whatever torch's wording for the refusal (blocked module or not-allowed global), the line
    names the global and never repeats torch's advice to load the file unsafely."""
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": _Reduce(fn, args)}}, path)
    with pytest.raises(WMUsageError) as err:
        load_checkpoint(path)
    line = str(err.value)
    assert "\n" not in line and "refused to unpickle non-tensor data (" in line and name in line
    assert "weights_only` set to `False`" not in line and "Re-running" not in line


def test_payload_is_live_when_unpickled_naively(tmp_path):
    """Control: the planted file really runs code under plain pickle (so the refusals below mean something)."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_pickle_payload_in_checkpoint_is_refused(tmp_path, run_dir, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _plant(evil, marker)
    with pytest.raises(WMUsageError) as err:
        load_checkpoint(evil)
    assert "weights_only" in str(err.value) and "\n" not in str(err.value)
    # Through the CLI: `wm run --resume` on a run whose trainer state was replaced.
    _plant(run_dir / "checkpoints" / "last.trainer.pt", marker)
    code = wm_main(["run", "--resume", str(run_dir)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "last.trainer.pt" in line and "not a loadable checkpoint" in line and "refused to unpickle non-tensor data (" in line
    # ... and RunContext.load_model, which `wm eval` / `wm probe` use, given a .pt checkpoint
    # (the format of runs written before safetensors).
    from wm_framework.runs.context import load_run

    with pytest.raises(WMUsageError, match="not a loadable checkpoint"):
        load_run(run_dir).load_model(evil)
    assert not marker.exists(), "the pickle payload ran"


def test_safetensors_round_trip_and_refusals(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    f = tmp_path / "w.safetensors"
    save_weights_safetensors(f, model.state_dict())
    got = load_weights_safetensors(f)
    assert got.keys() == model.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    assert load_model_weights(f).keys() == got.keys()
    clone = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    load_state_dict_strict(clone, got, str(f))
    assert torch.equal(clone[0].weight, model[0].weight)
    other = torch.nn.Sequential(torch.nn.Linear(3, 5))
    with pytest.raises(WMUsageError, match=r"unexpected 2\.bias, 2\.weight; shape mismatch 0\.bias, 0\.weight"):
        load_state_dict_strict(other, got, str(f))
    # A truncated file and a pickle renamed to .safetensors are one-line errors, not code.
    (tmp_path / "cut.safetensors").write_bytes(f.read_bytes()[:40])
    marker = tmp_path / "pwned"
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    for bad in ("cut.safetensors", "evil.safetensors"):
        with pytest.raises(WMUsageError, match="not a safetensors weights file") as err:
            load_weights_safetensors(tmp_path / bad)
        assert "\n" not in str(err.value)
    assert not marker.exists()


CODE_LIKE = [
    "__import__('os').system('touch PWNED')",
    "$(touch PWNED)",
    "`touch PWNED`",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "!!python/object/apply:os.system ['touch PWNED']",
]


@pytest.mark.parametrize("text", CODE_LIKE)
def test_recipe_values_are_data_never_code(tmp_path, monkeypatch, capsys, text):
    """Code-looking strings in a recipe or an override stay strings: nothing runs."""
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path)
    src = recipe.read_text().replace('name = "tiny"', f"name = {json.dumps(text)}\ndescription = {json.dumps(text)}")
    recipe.write_text(src)
    assert wm_main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    from wm_framework.recipe import load_toml, parse_overrides, resolve, validate

    r = validate(resolve(load_toml(recipe), parse_overrides([f"description={json.dumps(text)}"]), False))
    assert r.name == text and r.description == text
    # An override that looks like code, in a numeric field, is a type error, not an evaluation.
    code = wm_main(["validate", str(recipe), f"train.lr={text}"])
    err = capsys.readouterr().err
    assert code == 2 and "train.lr" in err and "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("label", ["../../../../x", "/tmp/abs", "lr[/x]", "..", ".hidden", "a\\b", "x" * 101])
def test_sweep_labels_never_become_paths_outside_the_sweep(tmp_path, monkeypatch, capsys, label):
    """A label is a directory name under sweep/: separators, dot names and markup are refused up front."""
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path)
    recipe.write_text(recipe.read_text() + f"\n[[sweep.runs]]\nlabel = {json.dumps(label)}\n")
    assert wm_main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "sweep.runs.0.label" in err and "not a safe directory name" in err and "Traceback" not in err
    assert wm_main(["run", str(recipe), "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()
    capsys.readouterr()


def test_grid_labels_are_slugged_and_safe_labels_pass(tmp_path):
    from wm_framework.recipe import expand_sweep

    runs = expand_sweep({"name": "t", "sweep": {"grid": {"data.train": ["../../evil", "a/b.zarr"]},
                                                "runs": [{"label": "cfg_A-1.5,lr=3e-4"}]}})
    assert [label for label, _ in runs] == ["train=evil", "train=a-b.zarr", "cfg_A-1.5,lr=3e-4"]


@pytest.mark.parametrize("out", ["", "   ", ".", "/proc/foo", "/sys/x.zarr"])
def test_empty_or_special_out_paths_are_refused(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    code = wm_main(["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "1", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory
    if out.startswith("/"):
        assert wm_main(["run", str(tiny_recipe(tmp_path)), "--out", out]) == 2
        assert "refusing to write into" in capsys.readouterr().err


# ----------------------------------------------------------------------------- importers
def _shards(root: Path, rows: int = 6, L: int = 3) -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "shard_000000_frames.npy", np.zeros((rows, L, 8, 6, 3), np.uint8))  # unambiguous: channels last
    np.save(root / "shard_000000_actions.npy", np.zeros((rows, L), np.int64))
    np.save(root / "shard_000000_done.npy", np.zeros((rows, L), bool))
    (root / "manifest.json").write_text(json.dumps({"shards": [{"index": 0, "count": rows}]}))


def _import(capsys, fmt: str, src: Path, out: Path) -> tuple[int, str]:
    code = wm_main(["data", "import", fmt, str(src), "--out", str(out)])
    err = capsys.readouterr().err
    return code, err


def test_npy_shards_control_imports(tmp_path, capsys):
    """Control: the well-formed directory used below imports fine."""
    _shards(tmp_path / "src")
    code, err = _import(capsys, "npy-shards", tmp_path / "src", tmp_path / "ok.zarr")
    assert code == 0, err


@pytest.mark.parametrize("victim", ["shard_000000_frames.npy", "manifest.json"])
def test_importer_refuses_symlinks_leaving_the_source(tmp_path, capsys, victim):
    _shards(tmp_path / "outside")  # readable files a symlink could point at
    _shards(tmp_path / "src")
    (tmp_path / "src" / victim).unlink()
    os.symlink(tmp_path / "outside" / victim, tmp_path / "src" / victim)
    code, err = _import(capsys, "npy-shards", tmp_path / "src", tmp_path / "x.zarr")
    line = _one_error_line(err)
    assert code == 2 and victim in line and "outside" in line and "refusing" in line
    assert not (tmp_path / "x.zarr").exists()


def test_importer_ignores_paths_named_in_the_manifest(tmp_path, capsys):
    """A manifest naming ../../etc/passwd as a shard is never used as a path."""
    src = tmp_path / "src"
    _shards(src)
    (src / "manifest.json").write_text(json.dumps({"shards": ["../../../../etc/passwd", "/etc/shadow"]}))
    code, err = _import(capsys, "npy-shards", src, tmp_path / "x.zarr")
    line = _one_error_line(err)
    assert code == 2 and "shard_000001" in line and "passwd" not in line and "shadow" not in line
    (src / "manifest.json").write_text("{not json")
    code, err = _import(capsys, "npy-shards", src, tmp_path / "y.zarr")
    assert code == 2 and "manifest" in _one_error_line(err)


@pytest.mark.parametrize("kind", ["external_link", "virtual"])
def test_hdf5_importer_refuses_references_to_other_files(tmp_path, capsys, kind):
    import h5py

    n = 6
    with h5py.File(tmp_path / "secret.h5", "w") as h5:
        h5["data"] = np.arange(n, dtype=np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["pixels"] = np.zeros((n, 4, 4, 3), np.uint8)
        h5["action"] = np.zeros(n, np.int64)
        h5["ep_offset"], h5["ep_len"] = np.array([0]), np.array([n])
        if kind == "external_link":
            h5["stolen"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/data")
        else:
            layout = h5py.VirtualLayout(shape=(n,), dtype=np.float32)
            layout[:] = h5py.VirtualSource(str(tmp_path / "secret.h5"), "data", shape=(n,))
            h5.create_virtual_dataset("stolen", layout)
    code, err = _import(capsys, "hdf5", tmp_path / "d.h5", tmp_path / "x.zarr")
    line = _one_error_line(err)
    assert code == 2 and "'stolen'" in line and "refusing" in line


# ----------------------------------------------------------------------------- run directories
@pytest.mark.parametrize("planted", ["metrics.jsonl", "checkpoints"])
def test_symlink_leaving_a_run_directory_is_refused_on_resume(tmp_path, capsys, planted):
    """Before: a symlinked metrics.jsonl or checkpoints/ was written through on --resume."""
    import shutil

    run = tiny_run(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / planted
    shutil.move(str(run / planted), str(target))
    (run / planted).symlink_to(target)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    code = wm_main(["run", "--resume", str(run), "train.steps=6"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and f"'{planted}' is a symlink" in line, line
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


def test_checkpoint_named_outside_the_run_by_index_json_is_refused(tmp_path, capsys):
    """Before: index.json naming ../../outside/foreign.pt made `wm probe` load that file."""
    import shutil

    from wm_framework.runs.context import load_run

    run = tiny_run(tmp_path)
    (tmp_path / "outside").mkdir()
    shutil.copy(run / "checkpoints" / "last.safetensors", tmp_path / "outside" / "foreign.pt")
    index = run / "checkpoints" / "index.json"
    entries = json.loads(index.read_text())
    entries.append({**entries[-1], "file": "../../outside/foreign.pt", "label": "foreign"})
    index.write_text(json.dumps(entries))
    with pytest.raises(WMUsageError, match="resolves outside"):
        load_run(run).checkpoints()
    assert wm_main(["probe", str(run)]) == 2
    assert "foreign.pt" in _one_error_line(capsys.readouterr().err)
