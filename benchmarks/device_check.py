"""Every GPU figure the performance notes still lack, in one prepared command that fits a short GPU slot.

    python -m benchmarks.device_check --out docs/results/gpu/
    python -m benchmarks.device_check --allow-cpu --tiny --out /tmp/x   # the same code path on a CPU (tests)

Why one command: GPU time comes in short lends (about 8 minutes of one H200), so every
measurement has to be prepared, bounded and run in one go, and a failure in one part must
not cost the figures of the others. Each section runs with fixed, small step counts
(warm-up steps excluded from timing), records its own wall time against a budget, and
writes ``OUT/device_check.json`` and ``OUT/device_check.md`` as soon as it finishes, so a
session killed half-way still leaves what it measured. A section that raises records
``{"error": "<one line>"}`` and the rest continue.

Sections, in the order they run:

* ``matmul_peak``: a bf16 8192^2 matmul (fp32 1024^2 on CPU); the MFU denominator.
* ``lewm_eager``: LeWM at reference size (``benchmarks.gpu_lewm``: ViT-tiny 224 + the LeWM
  predictor, batch 128, bf16 autocast, host-sampled uint8 windows): samples/s, MFU, peak
  memory, GPU busy fraction.
* ``sampler``: windows/s the real ``WindowSampler`` serves (through the trainer's
  ``sample_step_batch``) from a Zarr store of Breakout-like 224x224 frames written with
  the real ``StoreWriter``, in ``ram`` and ``cache`` mode, against the windows/s the LeWM
  step consumes: ``sampler_keeps_up``.
* ``plan``: one CEM planning cycle with LeWM (``benchmarks.plan``: 300 samples x 30
  iterations, horizon 5), batched against one candidate at a time.
* ``nextframe``: the next-frame CNN at its reference size (CoinRun recipe: 4 grayscale
  84x84 frames -> 512, batch 64, channels-last, bf16), the real trainer's samples/s and a
  bare loop's (``benchmarks.train.bench_model``).
* ``gpt_state``: the GPT state-model ensemble at reference size (6 x 384, 2 members,
  history 32, batch 64): forward+backward samples/s, batched members against a loop
  (``benchmarks.ensemble.bench``).
* ``lewm_compile``: ``lewm_eager`` again under ``torch.compile``. Last, because it is the
  one part whose time cannot be bounded from outside (the compiler runs inside the first
  step); a compile failure is recorded as an error like any other.

``--tiny`` shrinks every model and count so that the whole run takes seconds on a CPU
(its figures mean nothing; it checks the code path). Without CUDA and without
``--allow-cpu`` it prints one skip line and exits 0 without writing anything.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# Step counts and per-section budgets (seconds). The full sizes add up to well under 8
# minutes on an H200 including start-up; the budgets are what each part is allowed, and a
# section that overruns its budget says so (``over_budget``) rather than being cut.
FULL = {
    "tiny": False,
    "lewm": {"batch": 128, "size": 224, "steps": 30, "warmup": 5, "timed_budget_s": 30.0},
    "lewm_compile": {"backend": "inductor"},
    "sampler": {"size": 224, "frames": 1200, "episode_len": 300, "batch": 128, "batches": 20, "timed_budget_s": 20.0},
    "plan": {"iterations": 30, "loop_samples": 20},
    "nextframe": {"steps": 40},
    "gpt_state": {"members": 2, "batch": 64, "history": 32, "n_layer": 6, "n_embd": 384, "n_head": 12, "reps": 20},
}
TINY = {
    "tiny": True,
    "lewm": {"batch": 4, "size": 32, "steps": 2, "warmup": 1, "timed_budget_s": 5.0},
    # Inductor on a CPU compiles C++ for minutes; the tiny run checks the torch.compile path
    # (graph capture, the step under dynamo) with the eager backend instead.
    "lewm_compile": {"backend": "eager"},
    "sampler": {"size": 32, "frames": 200, "episode_len": 100, "batch": 4, "batches": 3, "timed_budget_s": 2.0},
    "plan": {"iterations": 2, "loop_samples": 2},
    "nextframe": {"steps": 4, "batch": 4},
    "gpt_state": {"members": 2, "batch": 4, "history": 4, "n_layer": 1, "n_embd": 16, "n_head": 2, "reps": 1},
}
BUDGET_S = {"matmul_peak": 10, "lewm_eager": 60, "sampler": 60, "plan": 45, "nextframe": 60, "gpt_state": 30,
            "lewm_compile": 180}
WINDOW, FRAMESKIP = 4, 5  # the LeWM clip (recipes/lewm_breakout.toml)


# ----------------------------------------------------------------------------- sections
def section_matmul_peak(cfg: dict, shared: dict, device) -> dict:
    from benchmarks.train import measured_peak_flops

    peak, what = measured_peak_flops(device)
    shared["peak"] = (peak, what)
    return {"peak_flops": peak, "measured_with": what}


def _lewm(cfg: dict, shared: dict, device, compile_: bool) -> dict:
    import torch

    from benchmarks.gpu_lewm import build, measure

    c = cfg["lewm"]
    torch.manual_seed(0)
    model, losses = build(cfg["tiny"])
    try:
        res = measure(model, losses, device, batch=c["batch"], size=c["size"], steps=c["steps"], warmup=c["warmup"],
                      compile_=compile_, compile_backend=cfg["lewm_compile"]["backend"], peak=shared.get("peak"),
                      budget_s=c["timed_budget_s"])
    except Exception as e:
        if compile_:  # say which part failed: the figures without compile stand
            raise RuntimeError(f"torch.compile ({cfg['lewm_compile']['backend']}) failed: {_one_line(e)}") from e
        raise
    finally:
        if compile_:
            torch._dynamo.reset()  # drop compiled graphs and guards before anything else runs
    shared.setdefault("lewm_rates", {})["compile" if compile_ else "eager"] = res["samples_per_s"]
    return res


def section_lewm_eager(cfg, shared, device) -> dict:
    return _lewm(cfg, shared, device, compile_=False)


def section_lewm_compile(cfg, shared, device) -> dict:
    return _lewm(cfg, shared, device, compile_=True)


def section_sampler(cfg: dict, shared: dict, device) -> dict:
    from benchmarks.loader import breakout_frames, write_store
    from wm_framework.data.sampler import WindowSampler
    from wm_framework.data.store import EpisodeStore

    c = cfg["sampler"]
    rng = np.random.default_rng(0)
    # Breakout-like frames (mostly black, about as compressible as real ones, which sets the
    # chunk-decoding cost), resized to the LeWM input size by nearest neighbour.
    raw = breakout_frames(c["frames"], rng)
    rows, cols = (np.arange(c["size"]) * raw.shape[1] // c["size"]), (np.arange(c["size"]) * raw.shape[2] // c["size"])
    frames = raw[:, rows][:, :, cols]
    out = {"frames": c["frames"], "frame_shape": list(frames.shape[1:]), "window": WINDOW, "frameskip": FRAMESKIP,
           "batch": c["batch"]}
    with tempfile.TemporaryDirectory(prefix="wm_device_check_") as tmp:
        path = os.path.join(tmp, "breakout_like.zarr")
        t0 = time.perf_counter()
        write_store(path, frames, c["episode_len"], rng)
        out["write_s"] = time.perf_counter() - t0
        store = EpisodeStore.open(path)
        episodes = np.arange(store.num_episodes)
        ram = WindowSampler(store, episodes, WINDOW, FRAMESKIP, mode="ram")
        # A cache of a quarter of the store: about the 4 GiB default against a reference
        # Breakout store at 224 px (~15 GB), which does not fit in RAM mode.
        cache = WindowSampler(store, episodes, WINDOW, FRAMESKIP, mode="cache", ram_limit_bytes=ram.needed_bytes // 4)
        for name, sampler in (("ram", ram), ("cache", cache)):
            out[name] = _sampler_rate(sampler, c["batch"], c["batches"], c["timed_budget_s"], device)
    return out  # main() sets it against the LeWM rates (_compare_sampler)


def _sampler_rate(sampler, batch: int, batches: int, budget_s: float, device) -> dict:
    """Windows/s of the trainer's own per-step sampling call, one thread (as its prefetcher)."""
    import torch

    from wm_framework.train.loop import sample_step_batch

    first = sample_step_batch(sampler, batch, 0, 0)  # warm-up: RAM mode decodes the store here
    done, t0 = 0, time.perf_counter()
    while done < batches and (done < 2 or time.perf_counter() - t0 < budget_s):
        sample_step_batch(sampler, batch, 0, done + 1)
        done += 1
    res = {"windows_per_s": done * batch / (time.perf_counter() - t0), "batches": done}
    if device.type == "cuda":  # pinning runs on the training thread, not the sampler's: reported apart
        obs = torch.from_numpy(first["obs"])
        t0 = time.perf_counter()
        for _ in range(3):
            obs.pin_memory()
        res["pin_ms_per_batch"] = (time.perf_counter() - t0) / 3 * 1e3
    return res


def _compare_sampler(sampler: dict, shared: dict) -> None:
    """Set the sampler's rates against the fastest LeWM step measured so far (called again
    after the compiled run, which may consume faster)."""
    rates = shared.get("lewm_rates", {})
    if "ram" not in sampler or not rates:
        return
    mode, consumed = max(rates.items(), key=lambda kv: kv[1])
    sampler["lewm_consumes_windows_per_s"] = consumed
    sampler["lewm_run"] = mode
    for m in ("ram", "cache"):
        sampler[m]["ratio"] = sampler[m]["windows_per_s"] / consumed
        sampler[m]["keeps_up"] = sampler[m]["ratio"] >= 1.0
    # The headline is cache mode: a reference-size store is served from the chunk cache.
    sampler["mode"] = "cache"
    sampler["windows_per_s"] = sampler["cache"]["windows_per_s"]
    sampler["ratio"] = sampler["cache"]["ratio"]
    sampler["sampler_keeps_up"] = sampler["cache"]["keeps_up"]


def section_plan(cfg: dict, shared: dict, device) -> dict:
    import torch

    from benchmarks import plan

    c = cfg["plan"]
    built = None
    if cfg["tiny"]:  # the tiny LeWM of gpu_lewm: 32 px frames, same action blocks
        from benchmarks.gpu_lewm import build

        torch.manual_seed(0)
        model = build(True)[0].eval()
        built = (model, torch.rand(1, 3, 3, 32, 32), torch.zeros(1, 2, model.action_spec.block_dim))
    res = plan.bench("lewm", c["iterations"], c["loop_samples"], built=built, device=str(device))
    res.update(samples=plan.SAMPLES, iterations=plan.ITERATIONS, horizon=plan.HORIZON, dtype="fp32")
    return res


def section_nextframe(cfg: dict, shared: dict, device) -> dict:
    from benchmarks.train import MODELS, bench_model

    c = cfg["nextframe"]
    spec = dict(MODELS["nextframe"])
    gpu = spec.pop("gpu")
    if cfg["tiny"]:
        spec["batch"] = c["batch"]
    else:  # the reference size, as benchmarks.train applies it on CUDA
        spec.update({k: v for k, v in gpu.items() if k != "obs_shape"})
    peak = shared.get("peak", (None,))[0]
    with tempfile.TemporaryDirectory(prefix="wm_device_check_") as tmp:
        row = bench_model("nextframe", spec, steps=c["steps"], device=device.type, tmp=tmp, peak=peak)
    row["samples_per_s"] = row["trainer_samples_per_s"]
    row["precision"] = "bf16" if device.type == "cuda" else "fp32"
    return row


def section_gpt_state(cfg: dict, shared: dict, device) -> dict:
    from benchmarks.ensemble import bench

    c = cfg["gpt_state"]
    row = bench(c["members"], c["batch"], c["history"], c["n_layer"], c["n_embd"], c["n_head"], c["reps"],
                device=str(device))
    row["samples_per_s"] = row["batched_steps_per_s"] * c["batch"]
    row["loop_samples_per_s"] = row["loop_steps_per_s"] * c["batch"]
    row["what"] = "forward+backward, fp32, no optimizer step"
    return row


SECTIONS = {"matmul_peak": section_matmul_peak, "lewm_eager": section_lewm_eager, "sampler": section_sampler,
            "plan": section_plan, "nextframe": section_nextframe, "gpt_state": section_gpt_state,
            "lewm_compile": section_lewm_compile}


# ----------------------------------------------------------------------------- running
def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")[:300]


def run_section(name: str, cfg: dict, shared: dict, device) -> dict:
    """One section, timed; an exception becomes ``{"error": ...}`` so the others still run."""
    if device.type == "cuda":  # each section's peak memory is its own, not the largest so far
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        res = SECTIONS[name](cfg, shared, device)
    except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
        traceback.print_exc()
        res = {"error": _one_line(e)}
    finally:
        _release(device)
    res["wall_s"] = time.perf_counter() - t0
    res["budget_s"] = None if cfg["tiny"] else BUDGET_S[name]
    if not cfg["tiny"]:
        res["over_budget"] = res["wall_s"] > BUDGET_S[name]
    return res


def _release(device) -> None:
    # Each section's models die with it; free their memory so the next one's peak is its own.
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def environment(device) -> dict:
    import platform

    import torch

    cuda = device.type == "cuda"
    env = {"device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
           "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
           "python": platform.python_version(), "cpu_count": os.cpu_count()}
    if cuda:
        env["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return env


# ----------------------------------------------------------------------------- output
def _fmt(v, unit: str = "") -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.3g}{unit}" if abs(v) < 100 else f"{v:,.0f}{unit}"
    return f"{v}{unit}"


# What the markdown table shows per section: (label, key, scale, unit). The JSON has everything.
HEADLINES = {
    "matmul_peak": [("peak", "peak_flops", 1e-12, " TFLOP/s"), ("with", "measured_with", None, "")],
    "lewm_eager": [("samples/s", "samples_per_s", 1, ""), ("MFU", "mfu", 100, " %"),
                   ("peak memory", "peak_memory_gib", 1, " GiB"), ("GPU busy", "gpu_busy_fraction", 100, " %"),
                   ("warm-up", "warmup_s", 1, " s")],
    "sampler": [("windows/s (ram)", ("ram", "windows_per_s"), 1, ""), ("windows/s (cache)", ("cache", "windows_per_s"), 1, ""),
                ("LeWM consumes windows/s", "lewm_consumes_windows_per_s", 1, ""),
                ("cache / LeWM", "ratio", 1, "x"), ("keeps up", "sampler_keeps_up", None, "")],
    "plan": [("cycle", "cycle_s", 1, " s"), ("per iteration", "batched_per_iteration_s", 1e3, " ms"),
             ("loop cycle", "loop_cycle_s", 1, " s"), ("batched speed-up", "speedup", 1, "x"),
             ("shared-prefix speed-up", "prefix_speedup", 1, "x")],
    "nextframe": [("trainer samples/s", "trainer_samples_per_s", 1, ""), ("bare loop samples/s", "bare_samples_per_s", 1, ""),
                  ("MFU (trainer)", "mfu_trainer", 100, " %"), ("peak memory", "peak_memory_gib", 1, " GiB")],
    "gpt_state": [("batched samples/s", "samples_per_s", 1, ""), ("loop samples/s", "loop_samples_per_s", 1, ""),
                  ("batched / loop", "ratio", 1, "x")],
}
HEADLINES["lewm_compile"] = HEADLINES["lewm_eager"]


def _figures(name: str, res: dict) -> str:
    if "error" in res:
        return f"**error**: {res['error']}"
    parts = []
    for label, key, scale, unit in HEADLINES[name]:
        v = res
        for k in key if isinstance(key, tuple) else (key,):
            v = v.get(k) if isinstance(v, dict) else None
        if v is None:
            continue
        if scale is not None and not isinstance(v, bool):
            v = float(v) * scale
        parts.append(f"{label} {_fmt(v, unit)}")
    return "; ".join(parts).replace("|", "/")


def render(report: dict) -> str:
    env = report["environment"]
    lines = ["# Device check", "",
             "Written by `benchmarks/device_check.py`; every figure is from the one run below "
             "(`device_check.json` next to this file has all of them).", "",
             "| command | date | device | torch | CUDA | cuDNN | total wall |", "|---|---|---|---|---|---|---|",
             f"| `{report['command']}` | {report['date']} | {env['device']} | {env['torch']} | {env['cuda'] or '—'} "
             f"| {env['cudnn'] or '—'} | {report['total_wall_s']:.0f} s |", ""]
    if report["cpu_code_path_check"]:
        lines += ["**CPU code-path check** (`--allow-cpu`): the figures below mean nothing about a GPU.", ""]
    lines += ["| section | wall (s) | budget (s) | figures |", "|---|---|---|---|"]
    for name, res in report["sections"].items():
        budget = "—" if res.get("budget_s") is None else f"{res['budget_s']:.0f}"
        over = " (over)" if res.get("over_budget") else ""
        lines.append(f"| {name} | {res['wall_s']:.1f}{over} | {budget} | {_figures(name, res)} |")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    # Through a temp file: a session killed mid-write keeps the previous, complete file.
    for fname, text in (("device_check.json", json.dumps(report, indent=2, default=str)),
                        ("device_check.md", render(report))):
        tmp = out / f".{fname}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / fname)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/gpu/", help="folder for device_check.json and device_check.md")
    ap.add_argument("--allow-cpu", action="store_true", help="run on a CPU (code-path check; figures meaningless)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and counts (seconds on a CPU)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated subset of: " + ", ".join(SECTIONS))
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("device_check: skipped (no CUDA device; run on a GPU machine, or --allow-cpu --tiny for a code-path check)")
        return None
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    device = torch.device("cuda" if cuda else "cpu")
    cfg = TINY if args.tiny else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report = {"command": shlex.join(["python", "-m", "benchmarks.device_check", *argv]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "tiny": args.tiny,
              "cpu_code_path_check": not cuda, "environment": environment(device), "config": cfg,
              "sections": {}, "total_wall_s": 0.0}
    if not args.tiny:
        print(f"device_check: {len(names)} sections, budget {sum(BUDGET_S[n] for n in names)} s in all")
    shared: dict = {}
    for name in names:
        print(f"device_check: {name} ...", flush=True)
        report["sections"][name] = res = run_section(name, cfg, shared, device)
        if "sampler" in report["sections"] and "error" not in report["sections"]["sampler"]:
            _compare_sampler(report["sections"]["sampler"], shared)
        report["total_wall_s"] = time.perf_counter() - t_start
        write(report, out)
        print(f"device_check: {name} done in {res['wall_s']:.1f} s: {_figures(name, res)}", flush=True)
    print(f"device_check: wrote {out / 'device_check.json'} and {out / 'device_check.md'} "
          f"({report['total_wall_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
