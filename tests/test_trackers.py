"""Trackers (wm_framework/runs/trackers.py) offline, on one tiny real run (collect, train, eval):
W&B in offline mode writes its run folder inside the run directory with the resolved recipe
as config, the eval results as tables and the eval plot as an image; WANDB_MODE is obeyed
and a recipe value beats it; names are unique and a resumed run keeps its W&B id;
TensorBoard's event files hold the training and eval scalars and the plot.

Nothing here touches the network: WANDB_MODE=offline (or disabled), error reporting off,
W&B's config/cache folders in the test's temporary directory; W&B's service process is torn
down at the end of the module.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

wandb = pytest.importorskip("wandb")

RECIPE = """
name = "toy_tracked"
seed = 1
stages = ["data", "train", "eval"]
[data]
train = "{store}"
window = 3
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 12 }}
policies = [{{ type = "random" }}]
episodes = 4
[model]
encoder = {{ type = "mlp", latent_dim = 4, hidden = 8 }}
predictor = {{ type = "mlp", hidden = 8 }}
[model.losses.pred]
type = "mse"
[train]
steps = 4
batch_size = 4
eval_every = 2
log_every = 2
checkpoint_every = 4
threads = 1
device = "cpu"
{wandb}
[eval]
horizons = [1, 2]
episodes = 2
split = "val"
video = false
overlap = false
"""


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """W&B's offline environment for the module (no network, nothing outside tmp)."""
    home = tmp_path_factory.mktemp("wandb_home")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true",
           "WANDB_DISABLE_CODE": "true", "WANDB_ERROR_REPORTING": "false", "WANDB_X_DISABLE_STATS": "true",
           "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
           "WANDB_DATA_DIR": str(home / "data"), "WANDB_ARTIFACT_DIR": str(home / "artifacts")}
    with pytest.MonkeyPatch.context() as mp:
        for k in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_API_KEY", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        yield mp
        wandb.teardown()  # the service process ends with the module, never hangs the session


def _run(parent: Path, wandb_table: str = "[train.wandb]", *args: str) -> Path:
    from wm_framework.cli import main as wm_main

    parent.mkdir(parents=True, exist_ok=True)
    recipe = parent / "r.toml"
    recipe.write_text(RECIPE.format(store=parent / "store.zarr", wandb=wandb_table))
    before = set((parent / "runs").glob("*")) if (parent / "runs").is_dir() else set()
    assert wm_main(["run", str(recipe), "--out", str(parent / "runs"), *args]) == 0
    (run,) = set((parent / "runs").glob("*")) - before
    return run


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, wandb_env):
    """One run with W&B (mode from WANDB_MODE=offline) and TensorBoard on."""
    return _run(tmp_path_factory.mktemp("tracked"))


def wandb_records(path: Path) -> list:
    """The records of an offline run's ``run-<id>.wandb`` file: W&B's append-only log, in
    LevelDB's log format (32 KiB blocks of CRC | length | type headed chunks) after a
    7-byte header, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def _offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def _run_record(folder: Path):
    (log,) = folder.glob("run-*.wandb")
    return next(r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run")


def test_wandb_offline_from_the_environment_gets_config_tables_and_media(tracked_run):
    state = json.loads((tracked_run / "trackers.json").read_text())
    (folder,) = _offline_runs(tracked_run)  # WANDB_MODE=offline, the recipe names no mode
    assert folder.name.endswith(state["wandb"]["id"])
    run = _run_record(folder)
    assert run.run_id == state["wandb"]["id"] and run.display_name == tracked_run.name == state["wandb"]["name"]
    assert run.project == "wm-framework"  # neither the recipe nor WANDB_PROJECT names one
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["name"] == "toy_tracked" and config["train"]["steps"] == 4 and config["eval"]["horizons"] == [1, 2]
    files = folder / "files" / "media"
    tables = sorted(p.relative_to(files / "table").as_posix() for p in (files / "table").rglob("*.table.json"))
    assert any(t.startswith("eval/values_") for t in tables), tables
    model = json.loads(next((files / "table" / "eval" / "metrics").glob("model_*.table.json")).read_text())
    assert model["columns"][0] == "key" and [row[0] for row in model["data"]] == ["1", "2"]  # one row per horizon
    assert list((files / "images" / "plots").glob("rollout_mse_*.png")), "the eval plot is not logged as an image"
    (log,) = folder.glob("run-*.wandb")
    summary = {u.key: json.loads(u.value_json) for r in wandb_records(log)
               if r.WhichOneof("record_type") == "summary" for u in r.summary.update if u.key}
    assert isinstance(summary["eval/metrics/model/1/latent_mse"], float) and summary["train/global_step"] == 4
    history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item} for r in wandb_records(log)
               if r.WhichOneof("record_type") == "history"]
    assert any("loss" in h for h in history) and any("val/loss" in h for h in history)  # training scalars


def test_tensorboard_gets_training_and_eval_scalars_and_the_plot(tracked_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss", "val/loss", "lr"} <= set(scalars)
    assert "eval/metrics/model/1/latent_mse" in scalars and "train/best_val_loss" in scalars
    (point,) = events.Scalars("eval/metrics/model/1/latent_mse")
    assert point.step == 4  # stage results sit at the final training step
    results = json.loads((tracked_run / "results.json").read_text())
    assert point.value == pytest.approx(results["eval"]["metrics"]["model"]["1"]["latent_mse"], rel=1e-6)
    assert "plots/rollout_mse" in events.Tags()["images"]


def test_resume_continues_the_same_wandb_run_and_logs_nothing_twice(tracked_run, wandb_env):
    from wm_framework.cli import main as wm_main

    state = json.loads((tracked_run / "trackers.json").read_text())
    assert wm_main(["run", "--resume", str(tracked_run)]) == 0  # training is done: eval runs again
    after = json.loads((tracked_run / "trackers.json").read_text())
    assert after["wandb"] == state["wandb"]
    runs = _offline_runs(tracked_run)
    assert len(runs) == 2 and all(p.name.endswith(state["wandb"]["id"]) for p in runs)
    # The rewritten eval plot is logged again; nothing else the first process logged is.
    assert after["media"]["plots/rollout_mse.png"] != state["media"]["plots/rollout_mse.png"]
    assert set(after["media"]) == set(state["media"])


def test_mode_from_environment_recipe_wins_and_names_are_unique(tmp_path, wandb_env):
    wandb.teardown()  # W&B reads its environment once per process, when it first sets up
    wandb_env.setenv("WANDB_MODE", "disabled")
    try:
        quiet = _run(tmp_path / "a")
        loud = _run(tmp_path / "a", '[train.wandb]\nmode = "offline"\nproject = "named"')  # the recipe beats the env
    finally:
        wandb.teardown()
        wandb_env.setenv("WANDB_MODE", "offline")
    assert not (quiet / "wandb").exists() or not any((quiet / "wandb").iterdir())  # disabled: nothing written
    (folder,) = _offline_runs(loud)
    run = _run_record(folder)
    assert run.project == "named"
    assert loud.name != quiet.name and run.display_name == loud.name  # same recipe, same second: -1 suffix


def test_tracker_logs_figures_once_and_videos_reach_both(tmp_path, wandb_env):
    """The hook itself, on a bare run directory: results, then a section with new figures."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from wm_framework.recipe import validate
    from wm_framework.runs.context import RunContext, new_run_dir
    from wm_framework.stages.evaluate.video import write_mp4
    from wm_framework.atomic import atomic_write_bytes
    from wm_framework.train.views import _png_bytes

    recipe = validate({"name": "bare", "stages": [], "train": {"wandb": {"mode": "offline"}}})
    ctx = RunContext(new_run_dir("bare", tmp_path / "runs"), recipe, device="cpu")
    atomic_write_bytes(ctx.plots_dir / "curve.png", _png_bytes(np.zeros((6, 10, 3), np.uint8)))
    write_mp4(np.zeros((3, 16, 16, 3), np.uint8), ctx.videos_dir / "clip.mp4", fps=4)
    ctx.update_results("thing", {"score": 0.5, "rows": [{"a": 1, "b": "x"}, {"a": 2, "b": None}]})
    ctx.write_report_section("thing", "Thing", "text")
    ctx.write_report_section("thing", "Thing", "text again")  # nothing new: nothing logged twice
    assert ctx.tracker.log_new_media() == []
    ctx.close_tracker()
    events = EventAccumulator(str(ctx.path / "tensorboard"))
    events.Reload()
    assert {"plots/curve", "videos/clip"} <= set(events.Tags()["images"]) | set(events.Tags().get("tensors", []))
    assert [e.value for e in events.Scalars("thing/score")] == [0.5]
    (folder,) = _offline_runs(ctx.path)
    media = folder / "files" / "media"
    assert len(list((media / "images" / "plots").glob("curve_*.png"))) == 1
    assert len(list((media / "videos" / "videos").glob("clip_*.mp4"))) == 1
    rows = json.loads(next((media / "table" / "thing").glob("rows_*.table.json")).read_text())
    assert rows["columns"] == ["a", "b"] and rows["data"] == [[1, "x"], [2, None]]


def test_missing_wandb_is_one_line_naming_the_install(tmp_path, monkeypatch):
    import sys

    from wm_framework.errors import WMUsageError
    from wm_framework.recipe import validate
    from wm_framework.runs.context import RunContext, new_run_dir

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ModuleNotFoundError
    recipe = validate({"name": "bare", "stages": [], "train": {"wandb": {}, "tensorboard": False}})
    ctx = RunContext(new_run_dir("bare", tmp_path), recipe, device="cpu")
    with pytest.raises(WMUsageError) as err:
        ctx.update_results("x", {"y": 1})
    assert str(err.value) == 'train.wandb: wandb is not installed (pip install "wm-framework[wandb]")'


def test_results_become_scalars_and_tables():
    from wm_framework.runs.result_tables import numeric_leaves, result_tables

    result = {"space": "latent", "horizons": [1, 5], "ok": True, "nan": float("nan"),
              "metrics": {"model": {"1": {"mse": 0.1, "n": 8}, "5": {"mse": 0.3, "n": 8}}},
              "videos": [{"mp4": "videos/a.mp4"}, {"mp4": "videos/b.mp4"}]}
    assert numeric_leaves(result) == {"metrics/model/1/mse": 0.1, "metrics/model/1/n": 8.0,
                                      "metrics/model/5/mse": 0.3, "metrics/model/5/n": 8.0}
    tables = result_tables(result)
    assert set(tables) == {"values", "metrics/model", "videos"}
    assert tables["metrics/model"] == (["key", "mse", "n"], [["1", 0.1, 8], ["5", 0.3, 8]])
    assert tables["videos"] == (["mp4"], [["videos/a.mp4"], ["videos/b.mp4"]])
    values = dict(tables["values"][1])
    assert values["horizons"] == "[1, 5]" and values["nan"] is None and "videos" not in values
    # a sweep's results: the runs are the rows
    assert result_tables({"s0": {"loss": 1.0}, "s1": {"loss": 2.0}})["rows"] == (["key", "loss"], [["s0", 1.0], ["s1", 2.0]])


def test_wandb_folder_is_wandbs_own_but_a_planted_link_is_still_refused(tmp_path):
    """W&B's service links its log from its cache into <run>/wandb/<run folder>/logs; the run
    directory check looks past W&B's folder, never past a link named like it."""
    from wm_framework.runs.resume import is_safe
    from wm_framework.safety import symlinks_leaving

    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    (run / "sweep" / "s0" / "wandb" / "offline-run-x" / "logs").mkdir(parents=True)
    (run / "sweep" / "s0" / "wandb" / "offline-run-x" / "logs" / "debug-core.log").symlink_to(outside / "core.log")
    assert symlinks_leaving(run, skip=("wandb",)) == []
    assert len(symlinks_leaving(run)) == 1  # other callers still see everything
    (run / "wandb").symlink_to(outside)
    assert [rel for rel, _ in symlinks_leaving(run, skip=("wandb",))] == ["wandb"]
    # Where metrics go may change on resume; what is trained may not.
    assert is_safe("train.wandb") and is_safe("train.wandb.mode") and is_safe("train.tensorboard")
