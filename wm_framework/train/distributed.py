"""Data-parallel training (torchrun / SLURM + DDP) with as little ceremony as possible.

A process belongs to a distributed run when the launcher set ``WORLD_SIZE > 1`` (with
``RANK`` and ``LOCAL_RANK``); ``torchrun``, ``wm run --nproc-per-node N`` (which
re-launches itself through torchrun) and SLURM's ``srun`` with those variables all
qualify. Otherwise everything here is a no-op and the trainer runs single-process.

The rules that make a DDP run equal a single-process run on the same global batch:

* every rank draws the *global* batch's indices from the generator seeded by
  (seed, step) and loads only its own contiguous slice (:func:`shard_slice`);
* torch's RNG is seeded identically on every rank, so SIGReg's random directions agree;
* losses that are statistics of the batch (e.g. SIGReg) see the global batch through
  ``out["gather"]``, set by the trainer in training steps to an all-gather that keeps gradients
  (:func:`gather_with_grad`): every rank computes the same global value, the gather's
  backward sums the W identical contributions into each rank's slice, and DDP's
  gradient average divides by W again: the global gradient, exactly;
* per-sample losses (MSE) are local means; DDP's average of them is the global mean;
* BatchNorm layers become SyncBatchNorm on CUDA (batch statistics over the global
  batch). PyTorch's SyncBatchNorm does not run on CPU, so CPU/gloo runs keep per-rank
  BatchNorm statistics (documented in docs/performance.md).

Only rank 0 writes run files (checkpoints, metrics, results, report); the run
directory is created once by rank 0 and its path broadcast (:func:`broadcast_object`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from wm_framework.errors import WMUsageError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(environ=None) -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (torchrun, or SLURM_PROCID / SLURM_NTASKS as a fallback)."""
    env = os.environ if environ is None else environ
    world = env.get("WORLD_SIZE") or env.get("SLURM_NTASKS")
    if world is None or int(world) <= 1:
        return DistInfo()
    rank = env.get("RANK") or env.get("SLURM_PROCID") or "0"
    local = env.get("LOCAL_RANK") or env.get("SLURM_LOCALID") or "0"
    info = DistInfo(int(rank), int(world), int(local))
    if not 0 <= info.rank < info.world_size:
        raise WMUsageError(f"RANK={info.rank} is outside WORLD_SIZE={info.world_size}")
    return info


def current() -> DistInfo:
    """This process's place in an initialised process group (DistInfo() when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when the environment says this is a distributed run.

    nccl on CUDA (each process pinned to ``cuda:LOCAL_RANK``), gloo on CPU. Idempotent.
    """
    info = env_info()
    if not info.enabled:
        return info
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return current()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if "MASTER_ADDR" not in os.environ:  # SLURM without torchrun: a single-node default
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", str(info.rank))
    os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    os.environ.setdefault("LOCAL_RANK", str(info.local_rank))
    # Rank 0 may collect data while the others wait at a barrier: allow long waits.
    timeout = datetime.timedelta(minutes=float(os.environ.get("WM_DIST_TIMEOUT_MIN", "60")))
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=info.rank, world_size=info.world_size, timeout=timeout)
    return info


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def rank_device(device, info: DistInfo):
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK``; CPU stays CPU."""
    import torch

    device = torch.device(device)
    if info.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def shard_slice(global_batch: int, info: DistInfo) -> slice:
    """This rank's contiguous slice of a global batch (the batch must split evenly)."""
    if global_batch % info.world_size:
        raise WMUsageError(f"train.batch_size={global_batch} does not split evenly over {info.world_size} processes")
    per = global_batch // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)


def gather_with_grad(z):
    """Concatenate every rank's ``z`` along dim 0 (the batch), keeping gradients to the local slice.

    Every rank must pass the same shape (the trainer's shards are equal). Backward sums
    the gradient of the gathered tensor over the ranks and returns this rank's rows.
    (``torch.distributed.nn.functional.all_gather`` is deprecated, and its gloo backward
    returned wrong gradients in our test with torch 2.13, so this is a small Function of
    our own built on the two collectives every backend has.)
    """
    return _GatherWithGrad.apply(z)


def _gather_function():
    import torch
    import torch.distributed as dist

    class GatherWithGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            world, rank = dist.get_world_size(), dist.get_rank()
            z = z.contiguous()
            parts = [torch.empty_like(z) for _ in range(world)]
            dist.all_gather(parts, z)
            ctx.rows = (rank * z.shape[0], (rank + 1) * z.shape[0])
            return torch.cat(parts, 0)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous().clone()
            dist.all_reduce(grad)  # every rank's loss depends on every rank's rows
            return grad[ctx.rows[0]: ctx.rows[1]]

    return GatherWithGrad


class _LazyGather:
    """Builds the autograd Function on first use (this module must not import torch at load)."""

    _fn = None

    def apply(self, z):
        if _LazyGather._fn is None:
            _LazyGather._fn = _gather_function()
        return _LazyGather._fn.apply(z)


_GatherWithGrad = _LazyGather()


def wrap_model(model, device, info: DistInfo, sync_batchnorm: bool = True):
    """DDP-wrapped ``model`` (BatchNorm -> SyncBatchNorm on CUDA); ``model`` keeps owning the weights."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not info.enabled:
        return model
    if sync_batchnorm and torch.device(device).type == "cuda":
        # Converts the BatchNorm children in place, reusing the same Parameter objects,
        # so an optimizer built on ``model`` keeps pointing at the live weights.
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
    # A model whose loss leaves some parameters untouched (e.g. a rollout-only head) says so
    # with ``ddp_find_unused_parameters = True``; the search costs time, so it is opt-in.
    return DDP(model, device_ids=ids, find_unused_parameters=bool(getattr(model, "ddp_find_unused_parameters", False)))


def all_reduce_flag(flag: bool) -> bool:
    """True on every rank when it is True on any rank (so all ranks skip or stop together)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_mean(values: dict) -> dict:
    """Mean of scalar floats over the ranks (for logging the global loss)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))
