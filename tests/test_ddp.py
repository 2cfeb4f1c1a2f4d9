"""Data-parallel training on CPU (gloo, 2 processes): equal to one process on the same global batch."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import _ddp_util
from conftest import run_wm

RECIPE = """
name = "ddp_toy"
seed = 1
stages = ["data", "train"]
[data]
train = "{store}"
window = 4
frameskip = 1
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 30 }}
policies = [{{ type = "random" }}]
episodes = 6
[model]
encoder = {{ type = "mlp", latent_dim = 8, hidden = 16 }}
predictor = {{ type = "mlp", hidden = 16 }}
[model.losses.pred]
type = "latent_mse"
[model.losses.sigreg]
type = "sigreg"
num_directions = 32
num_knots = 9
lam = 0.5
[train]
steps = 6
batch_size = 8
lr = 1e-3
eval_every = 3
checkpoint_every = 3
log_every = 2
threads = 1
tensorboard = false
"""


def test_sigreg_ddp_loss_and_gradients_equal_single_process(tmp_path):
    """Two gloo ranks, each on half of the global batch, SIGReg all-gathered with gradients."""
    import torch.multiprocessing as mp

    ref_loss, ref_grads = _ddp_util.reference()
    mp.spawn(_ddp_util.ddp_worker, args=(2, str(tmp_path / "rdzv"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for res in ranks:
        assert res["loss"] == pytest.approx(ref_loss, rel=1e-5)
        assert res["grads"].keys() == ref_grads.keys()
        for name, g in ref_grads.items():
            torch.testing.assert_close(torch.tensor(res["grads"][name]), torch.tensor(g), rtol=1e-4, atol=1e-6)
    # Each rank's own loss differs (its half of the MSE), so the equality above is not trivial.
    assert ranks[0]["local_loss"] != pytest.approx(ranks[1]["local_loss"], rel=1e-6)


def test_without_the_gather_sigreg_gradients_differ(tmp_path):
    """The control: a per-rank SIGReg (no all-gather) is not the global one."""
    model, losses = _ddp_util.build()
    batch = {k: v[:4] for k, v in _ddp_util.global_batch().items()}
    loss_half, _ = _ddp_util.step_grads(model, losses, batch)
    ref_loss, _ = _ddp_util.reference()
    assert loss_half != pytest.approx(ref_loss, rel=1e-3)


def test_rank_slices_of_a_step_batch_make_the_single_process_batch(tmp_path):
    from wm_framework.data.sampler import WindowSampler
    from wm_framework.data.store import EpisodeStore
    from wm_framework.train.distributed import DistInfo, shard_slice
    from wm_framework.train.loop import sample_step_batch
    from wm_framework.data.collect import collect

    path = str(tmp_path / "s.zarr")
    collect(path, env={"type": "linear_state", "max_steps": 20}, policies=[{"type": "random"}], episodes=3,
            workers=1, progress=False)
    store = EpisodeStore.open(path)
    sampler = WindowSampler(store, np.arange(store.num_episodes), 3, 1)
    full = sample_step_batch(sampler, 12, seed=4, step=7)
    parts = [sample_step_batch(sampler, 12, 4, 7, shard_slice(12, DistInfo(r, 3, r))) for r in range(3)]
    for key in ("obs", "action", "episode", "t0"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
    assert not np.array_equal(parts[0]["obs"], parts[1]["obs"])
    with pytest.raises(Exception, match="split evenly"):
        shard_slice(10, DistInfo(0, 4, 0))


def test_env_info_reads_torchrun_and_slurm_variables():
    from wm_framework.train.distributed import env_info

    assert not env_info({}).enabled
    assert not env_info({"WORLD_SIZE": "1", "RANK": "0"}).enabled
    info = env_info({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)
    slurm = env_info({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"})
    assert (slurm.rank, slurm.world_size) == (1, 2)


def test_torchrun_command_single_and_multi_node():
    from wm_framework.errors import WMUsageError
    from wm_framework.runs.run import torchrun_command

    cmd = torchrun_command(["r.toml", "train.steps=3", "--smoke"], nproc_per_node=2)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--standalone" in cmd
    assert cmd[-6:] == ["-m", "wm_framework.cli", "run", "r.toml", "train.steps=3", "--smoke"]
    multi = torchrun_command(["r.toml"], nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=1234)
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=1234"} <= set(multi)
    assert "--standalone" not in multi
    with pytest.raises(WMUsageError, match="master-addr"):
        torchrun_command(["r.toml"], nproc_per_node=1, nnodes=2, node_rank=0)
    with pytest.raises(WMUsageError):
        torchrun_command(["r.toml"], nproc_per_node=1, nnodes=2, node_rank=2, master_addr="a")


def test_wm_run_nproc_per_node_2_matches_single_process(tmp_path):
    """The real CLI through torchrun: one run directory, rank 0's files only, same weights."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(store=str(tmp_path / "toy.zarr")))
    single = run_wm("run", str(recipe), "--out", str(tmp_path / "single"), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = run_wm("run", str(recipe), "--out", str(tmp_path / "ddp"), "--nproc-per-node", "2", cwd=tmp_path,
                 env={"OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (single_dir,), runs = list((tmp_path / "single").iterdir()), list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1, runs  # the run directory was made once (rank 0) and shared
    assert ddp.stdout.count("run directory:") == 1
    ddp_dir = runs[0]
    lines = lambda d: (d / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    assert len(lines(ddp_dir)) == len(lines(single_dir))  # no second rank appending to metrics
    assert json.loads((ddp_dir / "results.json").read_text())["train"]["world_size"] == 2
    from safetensors.torch import load_file

    a = load_file(single_dir / "checkpoints" / "last.safetensors")
    b = load_file(ddp_dir / "checkpoints" / "last.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    la = [json.loads(x)["loss"] for x in lines(single_dir) if '"loss"' in x]
    lb = [json.loads(x)["loss"] for x in lines(ddp_dir) if '"loss"' in x]
    np.testing.assert_allclose(lb, la, rtol=1e-4)
