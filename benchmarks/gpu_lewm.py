"""LeWM training at reference size on one GPU: samples/s, MFU, peak memory, GPU busy fraction.

    python -m benchmarks.gpu_lewm [--steps 50] [--batch 128] [--json PATH]
    python -m benchmarks.gpu_lewm --allow-cpu --tiny     # exercise the code path on a CPU (tests)

Reference set-up (REFERENCE §1): ViT-tiny encoder at 224x224 (patch 14, 192 wide, 12
deep) + the LeWM predictor (6 blocks, 16x64 heads, MLP 2048), windows of 4 frames,
batch 128, latent MSE + SIGReg (1024 directions), AdamW (fused), bf16 autocast.

The input path is the trainer's: uint8 windows (224x224x3) sampled on the host in a
background thread, pinned, copied non-blocking, converted on the GPU. Reported:

* samples/s over ``--steps`` timed steps (after warm-up);
* MFU = (FLOPs of one step, counted by FlopCounterMode) x steps/s / peak, the peak
  being a bf16 8192^2 matmul measured in the same run;
* peak memory (``torch.cuda.max_memory_allocated``);
* GPU busy fraction = sum of per-step GPU time (CUDA events around each step) / wall
  time: below 1 when the GPU waits for data or for the host.

Without CUDA it prints a skip line and exits 0 (unless ``--allow-cpu``).
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np


def build(tiny: bool):
    from wm_framework.model import ActionSpec, WorldModel
    from wm_plugins.lewm.factories import build_ar_transformer, build_latent_mse, build_sigreg, build_vit_encoder

    if tiny:
        enc = build_vit_encoder(image_size=32, patch_size=8, width=32, depth=1, heads=2, projector_hidden=64)
        pred = build_ar_transformer(latent_dim=enc.out_dim, action_dim=20, history=3, depth=1, heads=2, head_dim=8,
                                    mlp_dim=64, projector_hidden=64)
        sig = build_sigreg(num_directions=32)
    else:
        enc = build_vit_encoder(preset="tiny")
        pred = build_ar_transformer(preset="lewm", latent_dim=enc.out_dim, action_dim=20, history=3)
        sig = build_sigreg()
    model = WorldModel(enc, pred, ActionSpec("discrete", 4, 5))
    return model, {"pred": (1.0, build_latent_mse()), "sigreg": (1.0, sig)}


def host_batches(batch: int, size: int, seed: int = 0):
    """uint8 windows [B, 4, H, W, 3] + action blocks [B, 4, 5] as the sampler would produce them."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 255, size=(8, batch, 4, size, size, 3), dtype=np.uint8)  # reused: no RNG cost per step
    i = 0
    while True:
        yield {"obs": pool[i % len(pool)], "action": rng.integers(0, 4, size=(batch, 4, 5))}
        i += 1


def prefetch(batches, depth: int = 3):
    """Serve ``batches`` from a background thread, as the trainer's prefetcher does: host
    sampling overlaps GPU compute. Returns (queue, stop event); set the event when done."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def producer():
        for b in batches:
            while not stop.is_set():  # a bounded put, so a finished run never leaves the thread (and its pool) behind
                try:
                    q.put(b, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if stop.is_set():
                return

    threading.Thread(target=producer, daemon=True).start()
    return q, stop


def measure(model, losses, device, *, batch: int, size: int, steps: int, warmup: int, compile_: bool = False,
            compile_backend: str = "inductor", peak: tuple[float, str] | None = None,
            budget_s: float | None = None) -> dict:
    """Train ``model`` for ``warmup`` untimed then up to ``steps`` timed steps on host-sampled
    uint8 windows; samples/s, MFU, peak memory and GPU busy fraction.

    ``peak`` (FLOP/s, what measured it) is measured here when not given, so a caller timing
    several models can measure it once. ``budget_s`` ends the timed loop early (at least one
    step) so a slow device cannot overrun a caller's time slot; ``steps`` says how many ran.
    The warm-up (where ``torch.compile`` compiles) is timed separately as ``warmup_s``.
    """
    import torch

    from benchmarks.train import flops_per_step, measured_peak_flops
    from wm_framework.train.loop import compute_loss, to_device
    from wm_framework.train.optim import build_optimizer

    cuda = device.type == "cuda"
    model = model.to(device).train()
    opt = build_optimizer(model, 5e-5, 1e-3, device=device)
    fwd = torch.compile(model, backend=compile_backend) if compile_ else model
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)  # noqa: E731

    q, stop = prefetch(host_batches(batch, size))
    try:
        first = to_device(q.get(), device)
        assert first["obs"].dtype == torch.uint8  # uint8 crosses to the device; converted there
        flops = flops_per_step(model, losses, first, autocast)  # eager model: compiling does not change the FLOPs
        peak_flops, peak_what = peak if peak is not None else measured_peak_flops(device)

        def step(b):
            with autocast():
                loss, _ = compute_loss(fwd(b), b, losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss

        t_warm = time.perf_counter()
        for _ in range(warmup):
            step(to_device(q.get(), device))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        warmup_s = time.perf_counter() - t_warm
        events = []
        t0 = time.perf_counter()
        done = 0
        while done < steps and (done == 0 or budget_s is None or time.perf_counter() - t0 < budget_s):
            b = to_device(q.get(), device)
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step(b)
                end.record()
                events.append((start, end))
            else:
                step(b)
            done += 1
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    finally:
        stop.set()
    busy = sum(s.elapsed_time(e) for s, e in events) / 1000 / wall if cuda else None
    sps = done * batch / wall
    return {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "batch": batch, "steps": done,
            "warmup": warmup, "warmup_s": warmup_s, "compile": compile_,
            "compile_backend": compile_backend if compile_ else None,
            "params": sum(p.numel() for p in model.parameters()), "samples_per_s": sps, "flops_per_step": flops,
            "peak_flops": peak_flops, "peak_measured_with": peak_what, "mfu": flops * sps / batch / peak_flops,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
            "gpu_busy_fraction": busy}


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU (code-path check; numbers meaningless)")
    ap.add_argument("--tiny", action="store_true", help="a tiny model (with --allow-cpu, for tests)")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_lewm: skipped (no CUDA device; run on a GPU machine, or --allow-cpu --tiny for a code-path check)")
        return None
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    model, losses = build(args.tiny)
    result = measure(model, losses, device, batch=args.batch, size=32 if args.tiny else 224, steps=args.steps,
                     warmup=args.warmup, compile_=args.compile)
    result["tiny"] = args.tiny
    sps, peak, busy = result["samples_per_s"], result["peak_flops"], result["gpu_busy_fraction"]
    print(f"LeWM {'tiny' if args.tiny else 'ViT-tiny 224 + predictor'}, batch {args.batch}, bf16={cuda}: "
          f"{sps:,.1f} samples/s | MFU {100 * result['mfu']:.1f} % of {peak / 1e12:.1f} TFLOP/s "
          f"({result['peak_measured_with']})"
          + (f" | peak memory {result['peak_memory_gib']:.1f} GiB | GPU busy {100 * busy:.0f} %" if cuda else ""))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
