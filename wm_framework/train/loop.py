"""The one training loop for every model composition (encoder -> predictor -> weighted losses).

Determinism and exact resume: the batch of step s is drawn with a generator seeded by
(seed, s) and torch's RNG is re-seeded from (seed, s) before each step, so a resumed
run replays exactly what an uninterrupted one would have done (on CPU, bit for bit),
without saving sampler state, and a prefetch thread may run ahead freely.

Data parallel (torchrun / SLURM, see ``distributed.py``): each rank draws the same
global batch indices and loads only its slice, the model is DDP-wrapped, batch-statistic
losses all-gather, and only rank 0 logs, shows progress and writes checkpoints.

Device path: batches stay uint8 until they are on the device (pinned memory and
non-blocking copies on CUDA); ``prepare_obs`` converts them there.
"""

from __future__ import annotations

import math
import queue
import threading
import time

import numpy as np
import torch

from wm_framework.errors import WMRuntimeError
from wm_framework.runs.context import RunContext
from wm_framework.runs.model_building import build_losses
from wm_framework.train import distributed
from wm_framework.train.checkpoint import (atomic_write_json, load_resume_state, load_state_dict_strict, recover_pending,
                                           save_training_checkpoint, weights_file)
from wm_framework.console import Progress, get_logger
from wm_framework.train.logger import MetricsLogger
from wm_framework.train.optim import build_optimizer, build_scheduler
from wm_framework.train.precision import resolve_precision

log = get_logger(__name__)


def to_device(batch: dict, device: torch.device) -> dict:
    """numpy batch -> tensors on the device (pinned + non-blocking on CUDA; uint8 stays uint8)."""
    out = {}
    cuda = device.type == "cuda"
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
            t = torch.from_numpy(np.ascontiguousarray(v))
            if cuda:
                t = t.pin_memory()
            out[k] = t.to(device, non_blocking=cuda)
        else:
            out[k] = v
    return out


def compute_loss(out: dict, batch: dict, losses: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of all loss terms; a loss returning a dict contributes each named term."""
    total = None
    terms: dict[str, torch.Tensor] = {}
    for name, (weight, fn) in losses.items():
        value = fn(out, batch)
        if isinstance(value, dict):  # named terms, prefixed with the loss name unless they already are
            items = [(t if t.startswith(name) else f"{name}/{t}", v) for t, v in value.items()]
        else:
            items = [(name, value)]
        for key, tval in items:
            terms[key] = tval
            total = weight * tval if total is None else total + weight * tval
    return total, terms


class _Prefetcher:
    """Samples the next batches in a background thread (sampling is numpy, so it overlaps compute)."""

    def __init__(self, sampler, batch_size: int, seed: int, start: int, stop: int, depth: int = 2,
                 shard: slice | None = None):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(sampler, batch_size, seed, start, stop, shard), daemon=True)
        self._t.start()

    def _run(self, sampler, batch_size, seed, start, stop, shard):
        try:
            for step in range(start, stop):
                if self._stop.is_set():
                    return
                self._q.put(sample_step_batch(sampler, batch_size, seed, step, shard))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            self._q.put(e)

    def next(self):
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        while not self._q.empty():
            self._q.get_nowait()


def sample_step_batch(sampler, batch_size: int, seed: int, step: int, shard: slice | None = None) -> dict:
    """The batch of ``step``: ``batch_size`` windows from a generator seeded by (seed, step).

    With ``shard`` (data parallel) the same global indices are drawn and only that slice
    is loaded, so the ranks together see exactly the single-process batch.
    """
    rng = np.random.default_rng([seed, step])
    if shard is None:
        return sampler.sample(batch_size, rng)
    if len(sampler) == 0:
        return sampler.sample(batch_size, rng)  # raises the sampler's own message
    return sampler.get(rng.integers(0, len(sampler), size=batch_size)[shard])


class _NullLogger:
    """Ranks other than 0 log nothing."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _call_hooks(model, losses, step: int, total: int) -> None:
    for obj in [model.encoder, model.predictor] + [fn for _, fn in losses.values()]:
        hook = getattr(obj, "on_train_step", None)
        if hook is not None:
            hook(step, total)


def _fit_normalization(model, sampler, seed: int, batches: int = 8, batch_size: int = 64) -> None:
    """Models that normalise with statistics the core cannot know (e.g. state deltas) fit them
    on a few training batches before step 0 (hook ``fit_normalization_from_batches``)."""
    for part in (model.encoder, model.predictor):
        hook = getattr(part, "fit_normalization_from_batches", None)
        if hook is not None:
            rng = np.random.default_rng([seed, 999_331])
            hook([sampler.sample(batch_size, rng) for _ in range(batches)])


def train(ctx: RunContext, resume: bool = False, progress: bool = True) -> dict:
    """Train the run's model; returns the train summary that also goes to results.json['train']."""
    recipe, cfg = ctx.recipe, ctx.recipe.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info = distributed.current()
    main = dist_info.is_main
    device = distributed.rank_device(ctx.device, dist_info)
    shard = distributed.shard_slice(cfg.batch_size, dist_info) if dist_info.enabled else None
    if not main:
        progress = False
    train_sampler = ctx.sampler("train")
    if len(train_sampler) == 0:
        raise WMRuntimeError(f"data.train: no training windows of {recipe.data.window} frames (frameskip {recipe.data.frameskip}); collect longer episodes")
    val_sampler = ctx.sampler("val") if len(ctx.splits()["val"]) else None
    if val_sampler is not None and len(val_sampler) == 0:
        val_sampler = None
    steps_per_epoch = max(1.0, len(train_sampler) / cfg.batch_size)
    total = cfg.steps or max(1, int(math.ceil(cfg.epochs * steps_per_epoch)))

    model = ctx.build_model(train=True).to(device)
    if cfg.channels_last:
        # NHWC convolutions are faster on tensor cores; a no-op for parameters that are not 4-D.
        model = model.to(memory_format=torch.channels_last)
    losses = build_losses(recipe)
    for _, fn in losses.values():
        if isinstance(fn, torch.nn.Module):
            fn.to(device)
    # Losses of batch statistics (SIGReg) must see the global batch under DDP: they find an
    # all-gather that keeps gradients in out["gather"] (training steps only; validation is local).
    gather = distributed.gather_with_grad if dist_info.enabled else None
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, device)
    sched = build_scheduler(opt, total, cfg.warmup_fraction, cfg.lr, cfg.min_lr)
    step, best_val, best_step = 0, math.inf, -1
    ckpt_dir = ctx.checkpoints_dir
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    if main:
        recover_pending(ckpt_dir)  # a kill mid-commit of the last pair: finished or discarded
    resumed = load_resume_state(ckpt_dir) if resume else None
    if resumed is not None:
        weights, state, source = resumed
        load_state_dict_strict(model, weights, source)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, best_val, best_step = int(state["step"]), float(state["best_val"]), int(state["best_step"])
        log.info("resuming from step %d of %d (%s)", step, total, source)
        if main:
            _forget_after(ctx.path / "metrics.jsonl", step)
    if main:
        _remove_stale_temp_files(ckpt_dir)
    if not resume or step == 0:
        _fit_normalization(model, train_sampler, recipe.seed)
    fwd_model = distributed.wrap_model(model, device, dist_info) if dist_info.enabled else model
    fwd_model = torch.compile(fwd_model) if cfg.compile else fwd_model
    precision = resolve_precision(cfg.precision, device)
    autocast = precision.autocast(device)

    logger = MetricsLogger(ctx.path, ctx.tracker) if main else _NullLogger()  # TensorBoard / W&B: ctx.tracker
    bar = Progress(total, step, f"train {recipe.name}" + (f" [{ctx.label}]" if ctx.label else ""), progress)
    epoch_marks = sorted(float(e) for e in cfg.checkpoint_epochs)
    index = _load_index(ckpt_dir)
    last_grad_norm = float("nan")
    curve = None
    if main and cfg.probe_curve is not None:  # the learning curve (rank 0, the unwrapped model)
        from wm_framework.train.probe_curve import ProbeCurve

        curve = ProbeCurve(ctx, model, device, cfg.probe_curve.every, cfg.probe_curve.rows, recipe.seed)
        if step == 0:
            logger.log({"epoch": 0.0, **curve.measure(0)})
    views = None
    if main:  # image strips and rollout videos, for models whose predictor returns observations
        from wm_framework.train.views import TrainingViews

        views = TrainingViews.for_run(ctx.path, cfg.views, model, val_sampler if val_sampler is not None else train_sampler,
                                      logger, device, cfg.eval_every)
    prefetch = _Prefetcher(train_sampler, cfg.batch_size, recipe.seed, step, total, shard=shard)
    t_last, samples_since = time.perf_counter(), 0
    bar_info = ""

    def checkpoint(label: str) -> None:
        if not main:
            return
        # Only `last` carries the optimizer and counters (resume reads nothing else); every
        # label's weights are a safetensors file a few times smaller than weights + AdamW moments.
        trainer_state = None if label != "last" else {
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
            "epoch": step / steps_per_epoch, "best_val": best_val, "best_step": best_step}
        sizes = save_training_checkpoint(ckpt_dir, label, model.state_dict(), trainer_state)
        index[label] = {"file": weights_file(label), "step": step, "epoch": step / steps_per_epoch, "label": label, **sizes}
        atomic_write_json(ckpt_dir / "index.json", sorted(index.values(), key=lambda e: (e["step"], e["label"])))

    def validate() -> dict:
        # Rank 0 alone, on the unwrapped model with local (non-gathered) batch losses:
        # validation must not enter a collective that the other ranks are not in.
        if val_sampler is None or not main:
            return {}
        model.eval()
        n = min(len(val_sampler), cfg.batch_size * cfg.eval_batches)
        idx = np.linspace(0, len(val_sampler) - 1, n).astype(np.int64)
        sums: dict[str, float] = {}
        with torch.no_grad(), autocast():
            for chunk in np.array_split(idx, max(1, math.ceil(n / cfg.batch_size))):
                torch.manual_seed(recipe.seed)  # the same SIGReg directions every evaluation
                b = to_device(val_sampler.get(chunk), device)
                out = (model if dist_info.enabled else fwd_model)(b)
                loss, terms = compute_loss(out, b, losses)
                for k, v in {"loss": loss, **terms}.items():
                    sums[f"val/{k}"] = sums.get(f"val/{k}", 0.0) + float(v) * len(chunk)
                for k, v in _obs_metrics(out, model).items():
                    key = f"val/{k.removeprefix('val_')}"
                    sums[key] = sums.get(key, 0.0) + v * len(chunk)
        model.train()
        return {k: v / n for k, v in sums.items()}

    try:
        while step < total:
            batch = to_device(prefetch.next(), device)
            torch.manual_seed(recipe.seed * 1_000_003 + step)
            _call_hooks(model, losses, step, total)
            with autocast():
                out = fwd_model(batch)
                out["gather"] = gather
                loss, terms = compute_loss(out, batch, losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # The norm is computed once, by the clipping itself (max_norm inf: no clipping).
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            # One host sync per step: a NaN in any term (even a weight-0 one) reaches the total.
            nonfinite = not bool(torch.isfinite(loss.detach()) & torch.isfinite(gnorm))
            if dist_info.enabled:  # every rank must skip (or stop) together, or DDP deadlocks
                nonfinite = distributed.all_reduce_flag(nonfinite)
            if nonfinite:
                bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
                if bad or not torch.isfinite(loss):
                    reason = f"non-finite loss term(s) {bad or ['total']}"
                    message = f"step {step}: loss term {', '.join(bad) or 'total'} is not finite"
                else:
                    reason = "non-finite gradient"
                    message = f"step {step}: gradient is not finite (loss {loss.item():.4g})"
                if cfg.nan_policy == "skip":
                    logger.log({"step": step, "skipped": True, "reason": reason})
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    continue
                raise WMRuntimeError(f"{message}; stopped, last good checkpoint kept in {ckpt_dir}")
            opt.step()
            sched.step()
            step += 1
            samples_since += cfg.batch_size  # the global batch: every rank's share together
            last_grad_norm = float(gnorm)
            if step % cfg.log_every == 0 or step == total:
                now = time.perf_counter()
                rate = samples_since / max(now - t_last, 1e-9)
                t_last, samples_since = now, 0
                scalars = distributed.all_reduce_mean({"loss": loss.item(), **{f"train/{k}": v.item() for k, v in terms.items()}})
                rec = {"step": step, "epoch": step / steps_per_epoch, "loss": scalars["loss"], "grad_norm": last_grad_norm,
                       "lr": sched.get_last_lr()[0], "samples_per_s": rate, **{k: v for k, v in scalars.items() if k != "loss"}}
                logger.log(rec)
                bar_info = f"loss {scalars['loss']:.4f} | {rate:,.0f} samples/s"
                bar.update(step, bar_info, force_line=True)
            else:
                # No loss.item() here: a per-step host sync would stall the GPU queue.
                bar.update(step, bar_info)
            if step % cfg.eval_every == 0 or step == total:
                val = validate()
                if val:
                    logger.log({"step": step, "epoch": step / steps_per_epoch, **val})
                    log.info("step %d/%d validation: %s", step, total, _metrics_line(val))
                    if val["val/loss"] < best_val:
                        best_val, best_step = val["val/loss"], step
                        checkpoint("best")
            if curve is not None and (curve.due(step) or step == total):
                logger.log({"epoch": step / steps_per_epoch, **curve.measure(step)})
            if views is not None:
                views.after_step(step, total)
            for e in epoch_marks:
                mark = int(math.ceil(e * steps_per_epoch))
                if mark == step:
                    checkpoint(f"epoch_{_fmt(e)}")
            if step % cfg.checkpoint_every == 0 or step == total:
                checkpoint("last")
    finally:
        prefetch.close()
        bar.close()
        logger.close()
    summary = {"best_val_loss": best_val if math.isfinite(best_val) else None, "best_step": best_step,
               "global_step": step, "final_grad_norm": last_grad_norm, "steps_per_epoch": steps_per_epoch,
               "total_steps": total, "precision": precision.name, "precision_reason": precision.reason}
    if "last" in index:  # what one checkpoint costs on disk (weights for every label, trainer state once)
        summary["checkpoint_bytes"] = {k.removesuffix("_bytes"): v for k, v in index["last"].items() if k.endswith("_bytes")}
        log.info("checkpoints in %s: weights %.2f MB per label (safetensors), trainer state %.2f MB (last only)", ckpt_dir,
                 summary["checkpoint_bytes"].get("weights", 0) / 1e6, summary["checkpoint_bytes"].get("trainer_state", 0) / 1e6)
    if dist_info.enabled:
        summary["world_size"] = dist_info.world_size
    if main:
        ctx.update_results("train", summary)
        if curve is not None:
            curve.finish()
    return summary


def _metrics_line(val: dict) -> str:
    """``val/loss 0.0123 | val/pred 0.0101 ...``: the total loss first, then each term."""
    keys = sorted(val, key=lambda k: (k != "val/loss", k))
    return " | ".join(f"{k.removeprefix('val/')} {val[k]:.4g}" for k in keys)


def _obs_metrics(out: dict, model) -> dict:
    """MSE/PSNR/SSIM for models that predict observations (they expose it via evaluate.metrics)."""
    from wm_framework.stages.evaluate.metrics import validation_metrics

    try:
        return {k: float(v) for k, v in (validation_metrics(out, model) or {}).items()}
    except Exception:  # noqa: BLE001 - metrics are extra; never kill training over them
        return {}


def _forget_after(metrics_file, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint's step: those steps are
    replayed, and logging them twice would make the curves lie."""
    import json

    if not metrics_file.is_file():
        return
    from wm_framework.train.checkpoint import atomic_write_text

    kept = [line for line in metrics_file.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(metrics_file, "".join(line + "\n" for line in kept))


def _remove_stale_temp_files(ckpt_dir) -> None:
    """A kill during an atomic write leaves `.<name>.*.tmp`; it was never renamed, so it is garbage."""
    for tmp in ckpt_dir.glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _fmt(e: float) -> str:
    return str(int(e)) if float(e).is_integer() else str(e).replace(".", "p")


def _load_index(ckpt_dir) -> dict:
    import json

    f = ckpt_dir / "index.json"
    return {e["label"]: e for e in json.loads(f.read_text())} if f.is_file() else {}
