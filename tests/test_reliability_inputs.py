"""Bad input never gives a traceback: mutated recipes, corrupted stores, foreign checkpoints,
and a full disk or read-only directory while writing leave the previous state intact."""

from __future__ import annotations

import copy
import errno
import glob
import os
import re
import shutil
from pathlib import Path

import pytest
import tomli_w
import torch
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _data_util import make_row_store
from _reliability_util import last_state, tiny_run
from wm_framework.cli import main as wm_main
from wm_framework.errors import WMUsageError
from wm_framework.recipe import load_toml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))
PROBLEM_LINE = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*: \S.*$")  # section.key: message


# ----------------------------------------------------------------------------- recipe mutations
def _leaves(table: dict, prefix=()):
    """(path, value) of the schema-checked scalar/list fields of data, train and the top level."""
    for k, v in table.items():
        path = prefix + (k,)
        if isinstance(v, dict):
            if path in (("data",), ("train",)):
                yield from _leaves(v, path)
        elif path[0] in ("data", "train", "name", "seed", "stages", "description"):
            yield path, v


def _components(data: dict):
    """Paths of every component table (those with a `type`) in model and data.collect*."""
    out = []
    model = data.get("model", {})
    for k in ("encoder", "predictor"):
        if isinstance(model.get(k), dict):
            out.append(("model", k))
    out += [("model", "losses", n) for n in model.get("losses", {})]
    for c in ("collect", "collect_test"):
        col = data.get("data", {}).get(c)
        if isinstance(col, dict):
            out.append(("data", c, "env"))
    return out


def _set(data: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        data = data[k]
    data[path[-1]] = value


OUT_OF_RANGE = [(("train", "batch_size"), 0), (("train", "lr"), -1e-3), (("train", "warmup_fraction"), 2.0),
                (("train", "eval_every"), 0), (("train", "grad_clip"), 0.0), (("train", "steps"), -5),
                (("data", "window"), 1), (("data", "frameskip"), 0), (("data", "val_fraction"), 1.0)]
BROKEN_TOML = ["[unterminated\n", "key = \n", "= 3\n", 'x = "no end\n', "[a]\n[a]\n", "x = [1, 2\n", "x = 1 2\n"]


def _mutate(draw, data: dict, text: str):
    """One guaranteed-invalid mutation: returns (new TOML text, expected line prefix)."""
    kind = draw(st.sampled_from(["type", "unknown_key", "component", "missing", "range", "toml"]))
    if kind == "toml":
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))
        return "".join(lines[:at]) + draw(st.sampled_from(BROKEN_TOML)) + "".join(lines[at:]), "toml"
    data = copy.deepcopy(data)
    if kind == "type":
        path, value = draw(st.sampled_from(list(_leaves(data))))
        bad = 12345 if isinstance(value, str) else (7 if isinstance(value, list) else "not-a-value")
        _set(data, path, bad)
        return tomli_w.dumps(data), path[0]
    if kind == "unknown_key":
        where = draw(st.sampled_from([p for p in [(), ("data",), ("train",)] if not p or p[0] in data]))
        name = "zz_" + draw(st.text("abcdefgh", min_size=1, max_size=6))
        _set(data, where + (name,), draw(st.sampled_from([1, "x", [1], {"a": 1}])))
        return tomli_w.dumps(data), (where + (name,))[0]
    if kind == "component":
        path = draw(st.sampled_from(_components(data)))
        _set(data, path + ("type",), "no_such_" + draw(st.text("xyz", min_size=1, max_size=4)))
        return tomli_w.dumps(data), path[0]
    if kind == "missing":
        # Sections the train stage needs (a data-only recipe without [data]: see the xfail below).
        if "train" not in data.get("stages", ["data", "train"]):
            return "[unterminated\n" + text, "toml"
        section = draw(st.sampled_from([s for s in ("data", "model") if s in data]))
        del data[section]
        return tomli_w.dumps(data), section
    path, value = draw(st.sampled_from([(p, v) for p, v in OUT_OF_RANGE if p[0] in data]))
    _set(data, path, value)
    return tomli_w.dumps(data), path[0]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_recipes_give_exit_2_and_section_key_lines(tmp_path_factory, capsys, data):
    recipe = data.draw(st.sampled_from(RECIPES), label="recipe")
    text = recipe.read_text()
    parsed = load_toml(recipe)
    mutated, prefix = _mutate(data.draw, parsed, text)
    f = tmp_path_factory.mktemp("mut") / recipe.name
    f.write_text(mutated)
    capsys.readouterr()
    code = wm_main(["validate", str(f)])
    out = capsys.readouterr()
    lines = [x for x in out.err.splitlines() if x.strip()]
    assert code == 2, f"{recipe.name} mutated ({prefix}) was accepted:\n{mutated}\n{out.out}{out.err}"
    assert lines and "Traceback" not in out.err, out.err
    for line in lines:
        assert PROBLEM_LINE.match(line), f"not a `section.key: message` line: {line!r}"
    assert any(x.startswith(prefix) for x in lines), (prefix, lines)


def test_data_stage_without_data_section_is_rejected(tmp_path, capsys):
    f = tmp_path / "r.toml"
    f.write_text('name = "x"\nstages = ["data"]\n')
    assert wm_main(["validate", str(f)]) == 2
    assert capsys.readouterr().err.startswith("data")


def test_shipped_recipes_are_valid_controls(capsys):
    """Control for the property test: unmutated, every shipped recipe validates (exit 0)."""
    for recipe in RECIPES:
        assert wm_main(["validate", str(recipe)]) == 0, capsys.readouterr().err


# ----------------------------------------------------------------------------- corrupted stores
def _rm(path: Path, rel: str) -> None:
    p = path / rel
    shutil.rmtree(p) if p.is_dir() else p.unlink()


def _truncate_chunk(path: Path, array: str) -> None:
    chunk = [c for c in glob.glob(str(path / array / "c" / "**" / "*"), recursive=True) if os.path.isfile(c)][0]
    data = Path(chunk).read_bytes()
    Path(chunk).write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "missing array": (lambda p: _rm(p, "obs/pixels"), "obs/pixels"),
    "missing index": (lambda p: _rm(p, "episodes/ends"), "episodes/ends"),
    "deleted action chunk": (lambda p: _rm(p, "action/c/0"), "action"),
    "deleted reward chunk": (lambda p: _rm(p, "reward/c/0"), "reward"),
    "deleted obs chunk": (lambda p: _rm(p, "obs/pixels/c/0"), "obs/pixels"),
    "deleted label chunk": (lambda p: _rm(p, "labels/half/c/0"), "labels/half"),
    "truncated chunk": (lambda p: _truncate_chunk(p, "obs/pixels"), "obs/pixels"),
    "truncated index chunk": (lambda p: _truncate_chunk(p, "episodes/ends"), "episodes/ends"),
    "wrong dtype": (lambda p: zarr.open_group(str(p), mode="r+").create_array(
        "reward", shape=(9,), dtype="int16", overwrite=True), "reward"),
    "short array": (lambda p: zarr.open_group(str(p), mode="r+")["labels/row"].resize((5,)), "labels/row"),
    "short policy index": (lambda p: zarr.open_group(str(p), mode="r+")["episodes/policy"].resize((1,)), "episodes/policy"),
    "garbage metadata": (lambda p: (p / "action" / "zarr.json").write_text("{not json"), "action"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_store_one_line_naming_the_array(tmp_path, capsys, name):
    breakage, array = CORRUPTIONS[name]
    path = tmp_path / "s.zarr"
    make_row_store(path, [4, 5])
    assert wm_main(["data", "validate", str(path)]) == 0  # control: intact before the damage
    capsys.readouterr()
    breakage(path)
    results = {}
    for cmd in ("validate", "info"):
        code = wm_main(["data", cmd, str(path)])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip()]
        results[cmd] = (code, lines)
        assert "Traceback" not in err
    code, lines = results["validate"]
    assert code == 2 and lines and f"'{array}'" in lines[0], (name, lines)
    code, lines = results["info"]
    # info only opens the store (it does not decode every chunk); when it fails, it is one line.
    assert code in (0, 2) and (code == 0 or (len(lines) == 1 and f"'{array}'" in lines[0])), (name, lines)


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("inputs"))


def test_checkpoint_from_another_model_names_mismatched_keys(tmp_path, run_dir):
    from wm_framework.runs.context import load_run

    other = tiny_run(tmp_path, latent=5)  # same recipe, another latent size
    ctx = load_run(run_dir)
    with pytest.raises(WMUsageError) as err:
        ctx.load_model(other / "checkpoints" / "last.safetensors")
    msg = str(err.value)
    assert "\n" not in msg and "does not fit this model" in msg and "shape mismatch" in msg and "encoder." in msg
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"totally.different": torch.zeros(3)}}, foreign)
    with pytest.raises(WMUsageError, match=r"missing .*unexpected totally\.different"):
        ctx.load_model(foreign)
    ctx.load_model("last")  # control: its own checkpoint fits


def _snapshot(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_disk_full_while_writing_keeps_previous_state(tmp_path, run_dir, monkeypatch, where):
    from wm_framework.runs.context import load_run
    from wm_framework import atomic  # the writers (their os / tempfile are patched)
    from wm_framework.train import checkpoint as ck

    ctx = load_run(run_dir)
    before = _snapshot(run_dir)
    state = last_state(run_dir)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, where, full)
    with pytest.raises(OSError):
        ck.save_training_checkpoint(run_dir / "checkpoints", "last", state["model"], {"step": -1})
    with pytest.raises(OSError):
        ctx.update_results("probe", {"x": 1})
    with pytest.raises(OSError):
        ck.save_weights_safetensors(run_dir / "checkpoints" / "last.safetensors", state["model"])
    monkeypatch.undo()
    assert _snapshot(run_dir) == before, "a failed write changed or left files behind"
    assert ctx.load_model("last") is not None


def test_read_only_directory_keeps_previous_state(tmp_path, run_dir, monkeypatch):
    """A directory that refuses new files (chmod 555; as root, where chmod does not bind, the
    same EACCES is injected at file creation) leaves every file as it was."""
    from wm_framework import atomic  # the writers (their os / tempfile are patched)
    from wm_framework.train import checkpoint as ck

    ckpts = run_dir / "checkpoints"
    before = _snapshot(run_dir)
    if os.geteuid() == 0:
        def denied(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied", str(ckpts))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    os.chmod(ckpts, 0o555)
    try:
        with pytest.raises(PermissionError):
            ck.save_training_checkpoint(ckpts, "last", {"w": torch.zeros(2)}, {"step": -1})
        with pytest.raises(PermissionError):
            ck.atomic_write_json(ckpts / "index.json", [])
    finally:
        os.chmod(ckpts, 0o755)
        monkeypatch.undo()
    assert _snapshot(run_dir) == before


def test_full_disk_during_training_is_one_line_and_keeps_checkpoint(tmp_path, monkeypatch, capsys):
    """Through `wm run`: ENOSPC on the 3rd checkpoint write -> one error line, exit 1, the last pair intact."""
    from _reliability_util import tiny_recipe
    from wm_framework import atomic  # the writers (their os / tempfile are patched)

    recipe = tiny_recipe(tmp_path, steps=6)
    real, calls = os.replace, {"n": 0}

    def flaky(src, dst):
        if str(dst).endswith("last.safetensors.pending"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    code = wm_main(["run", str(recipe), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    monkeypatch.undo()
    errors = [x for x in err.splitlines() if x.startswith("error")]
    assert code == 1 and len(errors) == 1 and "no space left on device" in errors[0] and "Traceback" not in err, err
    run = next((tmp_path / "runs").iterdir())
    state = last_state(run)
    assert state["step"] == 2
    assert not list((run / "checkpoints").glob(".*.tmp")), "temp files left behind"
    assert not list((run / "checkpoints").glob(".*.pending")), "pending files left behind"
