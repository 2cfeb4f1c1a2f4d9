"""fp32 against bf16 autocast on this machine: matmul peak and LeWM training steps, side by side.

    python -m benchmarks.precision [--reference] [--steps N] [--threads T] [--force] [--json PATH]

What ``train.precision = "auto"`` would choose here (and why) is printed first. Then, in
one run: a square matmul in fp32 and in bf16, and the bare training loop of LeWM
(forward under autocast, backward, AdamW; SIGReg stays fp32 inside autocast) in fp32
and in bf16, as samples/s and the bf16/fp32 ratio. ``--reference`` uses the reference
size (ViT-tiny at 224 px + the LeWM predictor, batch 16: 18.0 M parameters) instead of
the smoke size (64 px, 0.3 M).

On a CPU without native bf16 (no AVX512-BF16 or AMX-BF16) oneDNN emulates bf16 and it
is slower than fp32 by orders of magnitude; the model rows are then skipped (the matmul
row says by how much) unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SMOKE = {"image": 64, "batch": 16,
         "encoder": {"type": "vit", "preset": "tiny", "image_size": 64, "patch_size": 8, "width": 64, "depth": 2,
                     "heads": 2, "projector_hidden": 256},
         "predictor": {"type": "ar_transformer", "preset": "lewm", "depth": 2, "heads": 4, "head_dim": 16,
                       "mlp_dim": 256, "projector_hidden": 256},
         "sigreg": {"num_directions": 256}}
REFERENCE = {"image": 224, "batch": 16, "encoder": {"type": "vit", "preset": "tiny"},
             "predictor": {"type": "ar_transformer", "preset": "lewm"}, "sigreg": {}}
WINDOW = 4  # 3 context frames + 1 target, as the LeWM recipes


def matmul_gflops(dtype, n: int, reps: int) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def build_lewm(size: dict, seed: int = 0):
    """The LeWM model and its two loss terms, built from the registry with a run's data parameters."""
    import torch

    from wm_framework import create
    from wm_framework.model import ActionSpec, WorldModel
    from wm_framework.runs.model_building import CONTEXT_KEYS_ENCODER, CONTEXT_KEYS_PREDICTOR, create_with_context

    ctx = dict(obs_shape=[3, size["image"], size["image"]], action_kind="discrete", n_actions=4, frameskip=5,
               action_dim=20, history=WINDOW - 1)
    torch.manual_seed(seed)
    encoder = create_with_context("encoders", size["encoder"], ctx, CONTEXT_KEYS_ENCODER)
    predictor = create_with_context("predictors", size["predictor"], dict(ctx, latent_dim=encoder.out_dim),
                                    CONTEXT_KEYS_PREDICTOR)
    model = WorldModel(encoder, predictor, ActionSpec("discrete", 4, 5))
    losses = {"pred": (1.0, create("losses", "latent_mse")), "sigreg": (1.0, create("losses", "sigreg", **size["sigreg"]))}
    return model, losses


def train_rate(size: dict, bf16: bool, steps: int) -> float:
    """Samples/s of forward + backward + AdamW on one batch already in memory."""
    import torch

    from wm_framework.train.loop import compute_loss

    model, losses = build_lewm(size)
    b = size["batch"]
    gen = torch.Generator().manual_seed(0)
    batch = {"obs": torch.rand(b, WINDOW, 3, size["image"], size["image"], generator=gen),
             "action": torch.randint(0, 4, (b, WINDOW, 5), generator=gen)}
    opt = torch.optim.AdamW(model.parameters(), 1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = compute_loss(model(batch), batch, losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * b / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", action="store_true", help="LeWM at reference size (224 px, 18 M parameters)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per precision")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--force", action="store_true", help="time bf16 training even where bf16 is emulated")
    ap.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    import torch

    from wm_framework.train.precision import cpu_bf16_features, resolve_precision

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    native = cpu_bf16_features()
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    result: dict = {"cpu": caps.get("cpu_name", "?"), "threads": args.threads, "native_bf16": native,
                    "auto": auto.name, "auto_reason": auto.reason}
    print(f"CPU {result['cpu']}, {args.threads} threads; train.precision=auto -> {auto.name} ({auto.reason})")

    # Emulated bf16 is ~300x slower: a smaller matrix keeps the row to about a second.
    n_bf16 = 1024 if native else 256
    fp32, bf16 = matmul_gflops(torch.float32, 1024, 5), matmul_gflops(torch.bfloat16, n_bf16, 3)
    result["matmul"] = {"fp32_gflops": fp32, "bf16_gflops": bf16, "bf16_n": n_bf16, "ratio": bf16 / fp32}
    print(f"matmul: fp32 {fp32:,.1f} GFLOP/s (1024^2), bf16 {bf16:,.2f} GFLOP/s ({n_bf16}^2): bf16/fp32 = {bf16 / fp32:.3f}x")

    size = REFERENCE if args.reference else SMOKE
    model, _ = build_lewm(size)
    row = {"size": "reference" if args.reference else "smoke", "batch": size["batch"], "image": size["image"],
           "params": sum(p.numel() for p in model.parameters())}
    del model
    row["fp32_samples_per_s"] = train_rate(size, False, args.steps)
    if native or args.force:
        row["bf16_samples_per_s"] = train_rate(size, True, args.steps)
        row["ratio"] = row["bf16_samples_per_s"] / row["fp32_samples_per_s"]
        print(f"LeWM {row['size']} ({row['params'] / 1e6:.2f} M params, batch {row['batch']}, {row['image']} px): "
              f"fp32 {row['fp32_samples_per_s']:.1f} samples/s, bf16 {row['bf16_samples_per_s']:.1f}: "
              f"bf16/fp32 = {row['ratio']:.2f}x")
    else:
        row["bf16_skipped"] = "no native bf16 on this CPU (bf16 is emulated); --force times it anyway"
        print(f"LeWM {row['size']} ({row['params'] / 1e6:.2f} M params): fp32 {row['fp32_samples_per_s']:.1f} samples/s; "
              f"bf16 skipped: {row['bf16_skipped']}")
    result["lewm"] = row
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
