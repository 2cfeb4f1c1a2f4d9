"""Workers for tests/test_ddp.py (module-level so torch.multiprocessing.spawn can import them)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch

GLOBAL_BATCH = 8
SEED = 5


def build():
    """A small JEPA-like model (MLP encoder + MLP predictor) with latent MSE + SIGReg, no BatchNorm."""
    from wm_framework.model import ActionSpec, WorldModel
    from wm_plugins.blocks.nets import MLPEncoder, MLPPredictor
    from wm_plugins.lewm.losses import SIGRegLoss, latent_mse

    torch.manual_seed(0)
    model = WorldModel(MLPEncoder(obs_shape=(6,), latent_dim=8, hidden=16),
                       MLPPredictor(latent_dim=8, action_dim=2, hidden=16), ActionSpec("continuous", 2, 1))
    losses = {"pred": (1.0, latent_mse), "sigreg": (1.0, SIGRegLoss(num_directions=32, num_knots=9, lam=0.5))}
    return model, losses


def global_batch() -> dict:
    rng = np.random.default_rng(0)
    return {"obs": rng.normal(size=(GLOBAL_BATCH, 4, 6)).astype(np.float32),
            "action": rng.normal(size=(GLOBAL_BATCH, 4, 1, 2)).astype(np.float32)}


def step_grads(model, losses, batch, gather=None) -> tuple[float, dict[str, list]]:
    """One forward/backward exactly as the trainer does it (``gather``: what it passes to the
    losses as ``out["gather"]`` under DDP); returns the loss and the gradients."""
    from wm_framework.train.loop import compute_loss, to_device

    torch.manual_seed(SEED)  # the trainer seeds every rank identically (same SIGReg directions)
    b = to_device(batch, torch.device("cpu"))
    out = model(b)
    out["gather"] = gather
    loss, _ = compute_loss(out, b, losses)
    loss.backward()
    return float(loss.detach()), {n: (p.grad if p.grad is not None else torch.zeros_like(p)).tolist()
                                  for n, p in model.named_parameters()}


def reference() -> tuple[float, dict]:
    """Single process on the whole global batch."""
    model, losses = build()
    return step_grads(model, losses, global_batch())


def ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from wm_framework.train import distributed

    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        info = distributed.current()
        model, losses = build()
        ddp = distributed.wrap_model(model, "cpu", info)
        shard = distributed.shard_slice(GLOBAL_BATCH, info)
        local = {k: v[shard] for k, v in global_batch().items()}
        loss, grads = step_grads(ddp, losses, local, gather=distributed.gather_with_grad)
        # The trainer logs the mean of the ranks' losses: the global MSE plus the (shared) global SIGReg.
        mean_loss = distributed.all_reduce_mean({"loss": loss})["loss"]
        grads = {n[len("module."):] if n.startswith("module.") else n: g for n, g in grads.items()}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"loss": mean_loss, "local_loss": loss, "grads": grads}, f)
    finally:
        dist.destroy_process_group()
