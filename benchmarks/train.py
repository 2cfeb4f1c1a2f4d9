"""Training throughput: the framework's trainer against a bare PyTorch loop, per model.

    python -m benchmarks.train [--quick] [--json PATH] [--models a,b] [--compile]

For each model a synthetic store of the right shape is written to a temp directory
and the real ``wm_framework.train.loop.train`` runs on it (window sampling in a
background thread, uint8 -> device, hooks, loss terms, NaN checks, gradient norm and
clipping, AdamW + schedule, logging, validation and checkpoints switched to the end).
Its samples/s (from metrics.jsonl, after a warm-up interval) is compared with the
ceiling: a bare loop of forward / backward / ``opt.step()`` on one batch already on the
device. The ratio is the trainer's efficiency.

FLOPs per step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward +
backward of one batch); model FLOP utilisation = FLOPs/step x steps/s / peak, where the
peak is a matmul measured in the same run (bf16 on CUDA, fp32 on CPU). On CPU the
models are small (smoke sizes); on CUDA the reference sizes run (LeWM: ViT-tiny 224 +
predictor, batch 128, bf16).

``--compile`` adds the bare loop with ``torch.compile`` for the small MLP (slow to
compile on CPU, so not in ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

# name -> (obs spec, action spec, window, frameskip, model table, CPU batch, GPU overrides)
MODELS = {
    "blocks_mlp": dict(
        obs={"key": "state", "shape": [32], "dtype": "float32"}, action={"type": "discrete", "n": 4},
        window=4, frameskip=1, batch=64,
        model={"encoder": {"type": "mlp", "latent_dim": 64, "hidden": 256},
               "predictor": {"type": "mlp", "hidden": 256}, "losses": {"pred": {"type": "mse"}}},
        gpu={"batch": 1024}),
    "lewm": dict(
        obs={"key": "pixels", "shape": [64, 64, 3], "dtype": "uint8"}, action={"type": "discrete", "n": 4},
        window=4, frameskip=5, batch=16,
        model={"encoder": {"type": "vit", "preset": "tiny", "image_size": 64, "patch_size": 8, "width": 64, "depth": 2,
                           "heads": 2, "projector_hidden": 256},
               "predictor": {"type": "ar_transformer", "preset": "lewm", "depth": 2, "heads": 4, "head_dim": 16,
                             "mlp_dim": 256, "projector_hidden": 256},
               "losses": {"pred": {"type": "latent_mse"}, "sigreg": {"type": "sigreg", "num_directions": 256}}},
        # Reference size: ViT-tiny at 224 px, the LeWM predictor, batch 128, bf16.
        gpu={"batch": 128, "obs_shape": [224, 224, 3],
             "model": {"encoder": {"type": "vit", "preset": "tiny"}, "predictor": {"type": "ar_transformer", "preset": "lewm"},
                       "losses": {"pred": {"type": "latent_mse"}, "sigreg": {"type": "sigreg"}}}}),
    "nextframe": dict(
        obs={"key": "pixels", "shape": [64, 64, 3], "dtype": "uint8"}, action={"type": "discrete", "n": 15},
        window=5, frameskip=1, batch=16,
        model={"encoder": {"type": "frame_stack_cnn", "size": 32, "latent_dim": 64, "channels": [8, 16, 16, 32]},
               "predictor": {"type": "cnn_decoder", "size": 32, "channels": [32, 16, 8, 8], "action_embed": 8},
               "losses": {"pixel": {"type": "pixel_huber"}}},
        gpu={"batch": 64, "channels_last": True,
             "model": {"encoder": {"type": "frame_stack_cnn", "size": 84, "latent_dim": 512},
                       "predictor": {"type": "cnn_decoder", "size": 84, "action_embed": 32},
                       "losses": {"pixel": {"type": "pixel_huber"}}}}),
    "gpt_state": dict(
        obs={"key": "state", "shape": [14], "dtype": "float32"}, action={"type": "continuous", "dim": 7},
        window=17, frameskip=1, batch=16,
        model={"encoder": {"type": "state_norm"},
               "predictor": {"type": "gpt_ensemble", "n_layer": 2, "n_head": 2, "n_embd": 32, "ensemble_size": 2},
               "losses": {"pred": {"type": "ensemble_mse"}}},
        gpu={"batch": 64, "window": 33,
             "model": {"encoder": {"type": "state_norm"},
                       "predictor": {"type": "gpt_ensemble", "n_layer": 6, "n_head": 12, "n_embd": 384, "ensemble_size": 2},
                       "losses": {"pred": {"type": "ensemble_mse"}}}}),
}


def write_store(path: str, spec: dict, frames: int, episode_len: int, seed: int = 0) -> None:
    from wm_framework.data.writer import StoreWriter

    rng = np.random.default_rng(seed)
    obs, act = spec["obs"], spec["action"]
    w = StoreWriter(path, env={"name": "synthetic", "params": {}}, obs_spec=obs, action_spec=act, label_names=[])
    for e, start in enumerate(range(0, frames, episode_len)):
        n = min(episode_len, frames - start)
        if obs["dtype"] == "uint8":
            o = rng.integers(0, 255, size=(n, *obs["shape"]), dtype=np.uint8)
        else:
            o = rng.normal(size=(n, *obs["shape"])).astype(np.float32)
        if act["type"] == "discrete":
            a = np.r_[rng.integers(0, act["n"], n - 1), -1]
        else:
            a = np.vstack([rng.normal(size=(n - 1, act["dim"])), np.full((1, act["dim"]), np.nan)]).astype(np.float32)
        flags = np.zeros(n, bool)
        ep = {"obs": o, "action": a, "reward": np.zeros(n, np.float32), "terminated": flags.copy(), "truncated": flags.copy()}
        ep["truncated"][-1] = True
        w.append_episode(ep, "random", e)


def measured_peak_flops(device) -> tuple[float, str]:
    """Dense matmul FLOP/s measured now: bf16 8192^2 on CUDA, fp32 1024^2 on CPU."""
    import torch

    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t0 = (50 if cuda else 5), time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0), f"{'bf16' if cuda else 'fp32'} matmul {n}x{n}"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_step(model, losses, batch, autocast) -> float:
    """Forward + backward FLOPs of one training step (matmuls/convs/attention, as PyTorch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from wm_framework.train.loop import compute_loss

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast():
            loss, _ = compute_loss(model(batch), batch, losses)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _recipe(name: str, spec: dict, store: str, steps: int, batch: int, device: str, compile_: bool = False) -> dict:
    return {"name": f"bench_{name}", "seed": 0, "stages": ["train"],
            "data": {"train": store, "window": spec["window"], "frameskip": spec["frameskip"], "val_fraction": 0.0},
            "model": spec["model"],
            "train": {"steps": steps, "batch_size": batch, "lr": 1e-4, "log_every": max(1, steps // 2),
                      "eval_every": steps, "checkpoint_every": steps, "tensorboard": False, "device": device,
                      "compile": compile_, "channels_last": bool(spec.get("channels_last", False)),
                      "warmup_fraction": 0.0}}


def bench_model(name: str, spec: dict, steps: int, device: str, tmp: str, peak: float | None) -> dict:
    import torch

    from wm_framework.recipe import validate
    from wm_framework.runs.context import RunContext, new_run_dir
    from wm_framework.runs.model_building import build_losses
    from wm_framework.train.loop import compute_loss, to_device, train
    from wm_framework.train.optim import build_optimizer

    batch_size = spec["batch"]
    store = str(Path(tmp) / f"{name}.zarr")
    span = (spec["window"] - 1) * spec["frameskip"] + 1
    write_store(store, spec, frames=max(8 * span, 400), episode_len=max(2 * span, 100))
    recipe = validate(_recipe(name, spec, store, steps, batch_size, device))
    ctx = RunContext(new_run_dir(name, Path(tmp) / "runs"), recipe)
    t0 = time.perf_counter()
    train(ctx, progress=False)
    trainer_wall = time.perf_counter() - t0
    logs = [json.loads(x) for x in (ctx.path / "metrics.jsonl").read_text().splitlines() if '"samples_per_s"' in x]
    ours = logs[-1]["samples_per_s"]  # the second half of the run: past compilation / allocator warm-up

    # The ceiling: the same model and optimiser on one batch already on the device.
    dev = ctx.device
    model = ctx.build_model(train=True).to(dev)
    if spec.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    losses = build_losses(recipe)
    opt = build_optimizer(model, 1e-4, 0.0, device=dev)
    batch = to_device(ctx.sampler("train").sample(batch_size, np.random.default_rng(0)), dev)
    use_bf16 = dev.type == "cuda"
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_bf16 else _null
    flops = flops_per_step(model, losses, batch, autocast)
    fwd = model

    def step():
        with autocast():
            loss, _ = compute_loss(fwd(batch), batch, losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    bare = _rate(step, steps // 2, batch_size, dev)
    row = {"model": name, "device": dev.type, "batch": batch_size, "window": spec["window"],
           "params": sum(p.numel() for p in model.parameters()), "trainer_samples_per_s": ours,
           "bare_samples_per_s": bare, "ratio": ours / bare, "flops_per_step": flops,
           "trainer_wall_s": trainer_wall}
    if peak:
        row["mfu_trainer"] = flops * ours / batch_size / peak
        row["mfu_bare"] = flops * bare / batch_size / peak
    if dev.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return row


def _null():
    from contextlib import nullcontext

    return nullcontext()


def _rate(step, n: int, batch_size: int, device) -> float:
    for _ in range(2):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(max(1, n)):
        step()
    _sync(device)
    return max(1, n) * batch_size / (time.perf_counter() - t0)


def bench_compile(steps: int) -> dict:
    """Bare-loop samples/s of the small MLP with and without torch.compile (CPU)."""
    import torch

    from wm_framework.model import ActionSpec, WorldModel
    from wm_plugins.blocks.losses import MSELoss
    from wm_plugins.blocks.nets import MLPEncoder, MLPPredictor
    from wm_framework.train.loop import compute_loss

    torch.manual_seed(0)
    b = 64
    batch = {"obs": torch.randn(b, 4, 32), "action": torch.randint(0, 4, (b, 4, 1))}
    out = {}
    for compiled in (False, True):
        model = WorldModel(MLPEncoder((32,), 64, 256), MLPPredictor(64, 4, 256), ActionSpec("discrete", 4, 1))
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        fwd = torch.compile(model) if compiled else model
        losses = {"pred": (1.0, MSELoss())}

        def step():
            loss, _ = compute_loss(fwd(batch), batch, losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        step()  # compiles
        first = time.perf_counter() - t0
        out["compiled" if compiled else "eager"] = {"samples_per_s": _rate(step, steps, b, torch.device("cpu")),
                                                    "first_step_s": first}
    out["ratio"] = out["compiled"]["samples_per_s"] / out["eager"]["samples_per_s"]
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | device | batch | params | trainer samples/s | bare loop samples/s | trainer / bare | GFLOP/step | MFU (trainer) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r['mfu_trainer']:.1f} %" if "mfu_trainer" in r else "—"
        lines.append(f"| {r['model']} | {r['device']} | {r['batch']} | {r['params'] / 1e6:.2f} M | {r['trainer_samples_per_s']:,.0f} "
                     f"| {r['bare_samples_per_s']:,.0f} | {r['ratio']:.2f}x | {r['flops_per_step'] / 1e9:.2f} | {mfu} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (CI)")
    ap.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile on the small MLP")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    peak, peak_what = measured_peak_flops(device)
    steps = 10 if args.quick else 40
    rows = []
    with tempfile.TemporaryDirectory(prefix="wm_bench_train_") as tmp:
        for name in [m for m in args.models.split(",") if m]:
            spec = dict(MODELS[name])
            if device.type == "cuda":  # the reference sizes
                gpu = spec.pop("gpu", {})
                spec.update({k: v for k, v in gpu.items() if k != "obs_shape"})
                if "obs_shape" in gpu:
                    spec["obs"] = dict(spec["obs"], shape=gpu["obs_shape"])
            rows.append(bench_model(name, spec, steps, device.type, tmp, peak))
    result = {"device": device.type, "peak_flops": peak, "peak_measured_with": peak_what, "rows": rows}
    if args.compile:
        result["compile"] = bench_compile(steps * 5)
    print(f"peak: {peak / 1e9:,.1f} GFLOP/s ({peak_what})")
    print(table(rows))
    if "compile" in result:
        c = result["compile"]
        print(f"\ntorch.compile, small MLP bare loop: eager {c['eager']['samples_per_s']:,.0f} samples/s, "
              f"compiled {c['compiled']['samples_per_s']:,.0f} ({c['ratio']:.2f}x; first step {c['compiled']['first_step_s']:.1f} s)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
