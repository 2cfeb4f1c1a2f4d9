"""What a run leaves behind (docs/outputs.md): safetensors weights with the trainer state
apart, a consistent `last` pair after a kill at any point of its commit, runs of the old
layout still loading and resuming, the notebook example of the docs, the console levels
and run.log, and probes that visit each checkpoint step once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from _reliability_util import tiny_recipe, tiny_run
from wm_framework.cli import main as wm_main
from wm_framework.errors import WMUsageError
from wm_framework.train import checkpoint as ck

DOCS = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"


@pytest.fixture(autouse=True)
def _default_console():
    """`wm -q` / `-v` set a process-wide console level: put it back for the next test."""
    yield
    from wm_framework.console import configure

    configure(0)


# ----------------------------------------------------------------------------- checkpoints
def _pair(ckpts: Path) -> tuple[int, int]:
    """(trainer state step, weights step) as found on disk now."""
    state = ck.load_checkpoint(ckpts / ck.TRAINER_STATE)
    return int(state["step"]), int(ck.weights_metadata(ckpts / "last.safetensors")["step"])


def test_an_interrupted_checkpoint_pair_is_finished_or_discarded(tmp_path):
    """A kill can land after the pending trainer state, after both pending files, or between
    the two renames: the next start has a pair from one step, never step N's optimizer on
    step N-1's weights."""
    lin = torch.nn.Linear(3, 2)
    opt_state = torch.optim.AdamW(lin.parameters()).state_dict()

    def trainer(step):
        return {"optimizer": opt_state, "step": step}

    def weights(step):
        return {k: v + step for k, v in lin.state_dict().items()}

    for crash_point, want in (("trainer pending", 1), ("both pending", 2), ("trainer renamed", 2)):
        d = tmp_path / crash_point.replace(" ", "_")
        d.mkdir()
        ck.save_training_checkpoint(d, "last", weights(1), trainer(1))
        assert _pair(d) == (1, 1)
        # What a kill leaves at each point of the commit of step 2 (written as the code would).
        torch.save(trainer(2), d / ".last.trainer.pt.pending")
        if crash_point != "trainer pending":
            (d / ".last.safetensors.pending").write_bytes(ck.weights_bytes(weights(2), {"step": 2}))
        if crash_point == "trainer renamed":
            (d / ".last.trainer.pt.pending").replace(d / ck.TRAINER_STATE)
        got_weights, state, _ = ck.load_resume_state(d)
        assert _pair(d) == (want, want) and state["step"] == want, crash_point
        torch.testing.assert_close(got_weights["weight"], weights(want)["weight"])
        assert not [p.name for p in d.iterdir() if p.name.endswith(".pending")], crash_point
    # A pair that disagrees with no pending file to explain it is refused, in one line.
    d = tmp_path / "mixed"
    d.mkdir()
    ck.save_training_checkpoint(d, "last", weights(1), trainer(1))
    torch.save(trainer(2), d / ck.TRAINER_STATE)
    with pytest.raises(WMUsageError, match=r"last.safetensors is from step 1 but last.trainer.pt from step 2"):
        ck.load_resume_state(d)


def test_weights_are_safetensors_and_only_last_carries_the_optimizer(tmp_path):
    run = tiny_run(tmp_path, steps=4)
    ckpts = run / "checkpoints"
    index = json.loads((ckpts / "index.json").read_text())
    assert {e["label"] for e in index} == {"last", "best"} and all(e["file"].endswith(".safetensors") for e in index)
    for e in index:
        assert e["weights_bytes"] == (ckpts / e["file"]).stat().st_size
    last = next(e for e in index if e["label"] == "last")
    assert last["trainer_state_bytes"] == (ckpts / "last.trainer.pt").stat().st_size
    assert "trainer_state_bytes" not in next(e for e in index if e["label"] == "best")
    train = json.loads((run / "results.json").read_text())["train"]
    assert train["checkpoint_bytes"] == {"weights": last["weights_bytes"], "trainer_state": last["trainer_state_bytes"]}
    assert "checkpoint size" in (run / "report.md").read_text()
    # The AdamW moments are twice the weights: the trainer state is the larger file.
    assert last["trainer_state_bytes"] > last["weights_bytes"]


def _to_old_layout(run: Path) -> None:
    """Rewrite a run's checkpoints the way runs before safetensors stored them: one
    ``<label>.pt`` per label holding model, optimizer and counters."""
    ckpts = run / "checkpoints"
    trainer = ck.load_checkpoint(ckpts / ck.TRAINER_STATE)
    index = json.loads((ckpts / "index.json").read_text())
    for e in index:
        torch.save({"model": ck.load_weights_safetensors(ckpts / e["file"]), **trainer}, ckpts / f"{e['label']}.pt")
        (ckpts / e["file"]).unlink()
        e["file"] = f"{e['label']}.pt"
        e.pop("weights_bytes", None), e.pop("trainer_state_bytes", None)
    (ckpts / ck.TRAINER_STATE).unlink()
    (ckpts / "index.json").write_text(json.dumps(index))


def test_a_run_of_the_old_layout_loads_and_resumes(tmp_path, capsys):
    from wm_framework import load_run

    run = tiny_run(tmp_path, steps=4)
    before = load_run(run).load_model("last").state_dict()
    _to_old_layout(run)
    ctx = load_run(run)
    after = ctx.load_model("last").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ctx.load_model("best") is not None
    assert wm_main(["run", "--resume", str(run), "train.steps=6"]) == 0, capsys.readouterr().err
    assert "resuming from step 4 of 6 (" in (run / "run.log").read_text() and "last.pt)" in (run / "run.log").read_text()
    assert ck.load_resume_state(run / "checkpoints")[1]["step"] == 6  # continued in the new layout
    assert json.loads((run / "results.json").read_text())["train"]["global_step"] == 6


# ----------------------------------------------------------------------------- the notebook example
SIZE = 16
NEXTFRAME = {"encoder": {"type": "frame_stack_cnn", "frames": 2, "size": SIZE, "latent_dim": 16, "channels": [4, 4, 8, 8]},
             "predictor": {"type": "cnn_decoder", "size": SIZE, "channels": [8, 4, 4, 4], "action_embed": 4},
             "losses": {"pixel": {"type": "pixel_mse"}}}
LATENT = {"encoder": {"type": "mlp", "latent_dim": 8, "hidden": 16}, "predictor": {"type": "mlp", "hidden": 16},
          "losses": {"pred": {"type": "mse"}}}


@pytest.fixture(scope="module")
def ball_store(tmp_path_factory):
    from wm_framework.data.collect import collect

    path = tmp_path_factory.mktemp("outputs") / "ball.zarr"
    collect(str(path), env={"type": "bouncing_ball", "size": SIZE, "max_steps": 20}, policies=[{"type": "random"}],
            episodes=4, workers=1, seed=0, progress=False)
    return str(path)


def _notebook_block() -> str:
    text = DOCS.read_text()
    block = re.search(r"## Loading a model in a notebook\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 6  # the import and five lines
    return block


@pytest.mark.parametrize("model", [NEXTFRAME, LATENT], ids=["nextframe", "latent"])
def test_the_notebook_example_runs(tmp_path, ball_store, model, capsys):
    import tomli_w

    recipe = tmp_path / "nb.toml"
    recipe.write_text(tomli_w.dumps({
        "name": "nb", "seed": 0, "stages": ["train"], "data": {"train": ball_store, "window": 3, "val_fraction": 0.25},
        "model": model, "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "tensorboard": False, "threads": 1,
                                  "views": {"images": False, "videos": False}}}))
    assert wm_main(["run", str(recipe), "--out", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    code = re.sub(r'load_run\("[^"]+"\)', f'load_run("{run}")', _notebook_block())
    scope: dict = {}
    exec(compile(code, str(DOCS), "exec"), scope)  # noqa: S102 - our own documentation
    ep, z, nxt, roll, net = scope["ep"], scope["z"], scope["nxt"], scope["roll"], scope["model"]
    T = len(ep["obs"])
    assert ep["obs"].dtype == np.uint8 and ep["obs"].shape == (T, SIZE, SIZE, 3) and ep["action"].shape == (T, 1)
    d = z.shape[1]
    assert z.shape == (T, d) and nxt["latent"].shape == (d,) and roll["latents"].shape == (10, d)
    # The same numbers as the tensor API the stages use.
    from wm_framework.model import prepare_actions, prepare_obs

    obs = prepare_obs(torch.from_numpy(ep["obs"][None, :4]))
    act = prepare_actions(torch.from_numpy(ep["action"][None, :13]), net.action_spec)
    ref = net.rollout(obs, act)
    np.testing.assert_allclose(roll["latents"], ref["latents"][0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nxt["latent"], ref["latents"][0, 0].numpy(), rtol=1e-5, atol=1e-6)
    if model is NEXTFRAME:  # a frame predictor also gives frames, uint8 in the store's layout
        assert roll["frames"].dtype == np.uint8 and roll["frames"].shape[0] == 10 and roll["frames"].shape[-1] in (1, 3)
        assert nxt["frame"].shape == roll["frames"].shape[1:]
        want = (ref["obs"][0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(roll["frames"], want)
    else:
        assert "frames" not in roll and "frame" not in nxt
    # With a batch axis in, a batch axis out.
    both = net.encode_numpy(np.stack([ep["obs"][:5], ep["obs"][1:6]]))
    np.testing.assert_allclose(both[0], z[:5], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected uint8 frames"):
        net.encode_numpy(ep["obs"][0, 0])


# ----------------------------------------------------------------------------- console and run.log
def test_quiet_verbose_and_run_log(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path, steps=4)
    assert wm_main(["-q", "run", str(recipe), "--out", "runs"]) == 0
    out = capsys.readouterr()
    assert out.err.strip() == "", out.err  # nothing but warnings and errors
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    log = (run / "run.log").read_text()
    for line in ("stage data", "stage train", "step 4/4 loss", "step 4/4 validation: loss", "run directory"):
        assert line in log, line  # run.log keeps everything the console would have said
    assert " DEBUG " not in log
    # --verbose: the stages' configs, on the console and in run.log (appended by --resume)
    assert wm_main(["-v", "run", "--resume", str(run), "train.steps=6"]) == 0
    err = capsys.readouterr().err
    assert "stage train config: {" in err and "step 6/6 validation: loss" in err
    log = (run / "run.log").read_text()
    assert log.index("step 4/4 loss") < log.index("resumed by: ") < log.index("stage train config: {")
    # Both at once is a usage error, one line.
    assert wm_main(["-q", "-v", "run", str(recipe)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --quiet and --verbose: choose one"]


def test_a_failed_run_ends_its_log_with_the_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path, steps=4)
    assert wm_main(["run", str(recipe), "--out", "runs", "model.predictor.hidden=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    last = (run / "run.log").read_text().strip().splitlines()[-1]
    assert " ERROR " in last and err[-1].removeprefix("error: ") in last, (last, err)


# ----------------------------------------------------------------------------- probes
def test_probe_visits_each_checkpoint_step_once(tmp_path, capsys):
    """`best` and `last` at the same step are one probe pass, reported under both labels."""
    from wm_framework.runs.run import run_recipe

    recipe = tiny_recipe(tmp_path, steps=4)
    # One quick probe is enough to see how checkpoints are visited (the default fits an MLP too).
    recipe.write_text(recipe.read_text() + '[probe]\nprobes = ["ridge"]\nbaselines = ["static"]\nbootstrap = 20\n')
    run = run_recipe(str(recipe), out=str(tmp_path / "runs"), progress=False)
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    steps = {e["label"]: e["step"] for e in index}
    assert steps["best"] == steps["last"] == 4, steps  # eval_every 2: the loss still falls at step 4
    assert wm_main(["probe", str(run)]) == 0, capsys.readouterr().err
    probes = json.loads((run / "probes.json").read_text())
    assert [(c["label"], c.get("same_as")) for c in probes["checkpoints"]] == [("last", ["best"])]
    summary = json.loads((run / "results.json").read_text())["probes"]
    some_task = next(iter(summary["tasks"].values()))
    assert {"last", "best"} <= set(next(iter(some_task.values())))
    assert "last (= best)" in (run / "report.md").read_text()
    assert "probe: checkpoint last (also best) (1/1)" in (run / "run.log").read_text()
