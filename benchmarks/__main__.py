"""Every benchmark in one command, each figure next to a baseline measured in the same run.

    python -m benchmarks                      # all (CPU: a few minutes)
    python -m benchmarks --quick              # CI-sized
    python -m benchmarks --only train,ensemble
    python -m benchmarks --out docs/performance.md   # also refresh the doc's results block

Runs benchmarks/{loader, collect, train, ensemble, plan}.py (those present), prints
one summary table (ours, baseline, ratio) plus each benchmark's own table, and writes
``benchmarks/results.json``. With ``--out``, the block between the
``<!-- benchmarks:begin -->`` / ``<!-- benchmarks:end -->`` markers of that markdown
file is replaced (the hand-written sections around it are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
ORDER = ("loader", "collect", "train", "ensemble", "plan", "startup")


def _figure(bench: str, what: str, ours: float, ours_label: str, baseline: float, baseline_label: str, unit: str,
            higher_is_better: bool = True) -> dict:
    ratio = (ours / baseline if higher_is_better else baseline / ours) if ours and baseline else None
    return {"benchmark": bench, "figure": what, "ours": ours, "ours_label": ours_label, "baseline": baseline,
            "baseline_label": baseline_label, "unit": unit, "ratio": ratio}


# ----------------------------------------------------------------------------- adapters
def run_loader(quick: bool, tmp: str) -> list[dict]:
    mod = importlib.import_module("benchmarks.loader")
    rows = mod.main((["--quick"] if quick else []))
    out = []
    for r in rows:
        w = r["windows_per_s"]
        out.append(_figure("loader", f"{r['name']} windows/s", w["ram"], "WindowSampler (ram)", w["naive_zarr"],
                           "one Zarr read per window", "windows/s"))
    return out


def run_collect(quick: bool, tmp: str) -> list[dict]:
    mod = importlib.import_module("benchmarks.collect")
    workers = 1 if quick else 2
    episodes, max_steps = (2, 500) if quick else (4 * workers, 1000)
    rate, frames = mod.collect_rate({"type": "breakout"}, episodes, max_steps, workers)
    raw = mod.raw_rate(frames, workers)
    print(f"| observation | frames | collect (frames/s) | raw ALE (frames/s) | collect / raw |\n|---|---|---|---|---|\n"
          f"| native 210x160 RGB, {workers} process(es) | {frames} | {rate:,.0f} | {raw:,.0f} | {rate / raw:.0%} |")
    return [_figure("collect", f"Breakout collection frames/s ({workers} proc.)", rate, "collect (heuristic + labels -> Zarr)",
                    raw, "raw ALE, random actions, nothing kept", "frames/s")]


def run_train(quick: bool, tmp: str) -> list[dict]:
    mod = importlib.import_module("benchmarks.train")
    res = mod.main((["--quick"] if quick else ["--compile"]))
    out = []
    for r in res["rows"]:
        label = f"{r['model']} training samples/s ({r['device']}, batch {r['batch']})"
        if "mfu_trainer" in r:
            label += f", MFU {100 * r['mfu_trainer']:.1f} %"
        out.append(_figure("train", label, r["trainer_samples_per_s"], "wm trainer (train.loop)",
                           r["bare_samples_per_s"], "bare fwd/bwd/step loop, batch on device", "samples/s"))
    if "compile" in res:
        c = res["compile"]
        out.append(_figure("train", "small MLP, torch.compile (CPU)", c["compiled"]["samples_per_s"], "compiled",
                           c["eager"]["samples_per_s"], "eager", "samples/s"))
    return out


def run_ensemble(quick: bool, tmp: str) -> list[dict]:
    mod = importlib.import_module("benchmarks.ensemble")
    rows = mod.main((["--quick"] if quick else []))
    return [_figure("ensemble", f"GPT ensemble K={r['members']} fwd+bwd steps/s", r["batched_steps_per_s"],
                    "one batched forward", r["loop_steps_per_s"], "loop over members", "steps/s") for r in rows]


def run_plan(quick: bool, tmp: str) -> list[dict]:
    mod = importlib.import_module("benchmarks.plan")
    # The big models' cycles are extrapolated from a few iterations either way (plan.py's --quick
    # sizes); on a CPU a measured 30-iteration GPT / LeWM cycle would take many minutes.
    models = "mlp,gpt" if quick else "mlp,gpt,lewm"
    rows = mod.main(["--quick", "--models", models])
    cycles = [_figure("plan", f"{r['model']} CEM planning cycle (300 x 30, horizon 5)"
                      + ("" if r.get("cycle_measured", True) else ", extrapolated"), r["cycle_s"], "batched rollouts",
                      r["loop_cycle_s"], "one candidate at a time", "s", higher_is_better=False) for r in rows]
    shared = [_figure("plan", f"{r['model']} 300 rollouts, horizon 5", r["rollout_shared_prefix_s"],
                      "shared context once", r["rollout_full_context_s"], "context per candidate", "s",
                      higher_is_better=False) for r in rows if r["model"] != "mlp"]
    return cycles + shared


def run_startup(quick: bool, tmp: str) -> list[dict]:
    r = importlib.import_module("benchmarks.startup").main(["--runs", "3" if quick else "7"])
    return [_figure("startup", "`wm --help`, whole process (s)", r["wm_help_s"], "wm --help", r["typer_rich_s"],
                    "python -c 'import typer, rich'", "s", higher_is_better=False)]


RUNNERS = {"loader": run_loader, "collect": run_collect, "train": run_train, "ensemble": run_ensemble, "plan": run_plan,
           "startup": run_startup}


# ----------------------------------------------------------------------------- output
def _num(v: float, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "s":
        return f"{v:.3g} s"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def summary_table(figures: list[dict]) -> str:
    lines = ["| benchmark | figure | ours | baseline | ours / baseline |", "|---|---|---|---|---|"]
    for f in figures:
        ratio = f"{f['ratio']:.2f}x" if f["ratio"] else "—"
        lines.append(f"| {f['benchmark']} | {f['figure']} | {_num(f['ours'], f['unit'])} ({f['ours_label']}) "
                     f"| {_num(f['baseline'], f['unit'])} ({f['baseline_label']}) | {ratio} |")
    return "\n".join(lines) + "\n\nRatios are written so that > 1 means ours is better (for times: baseline / ours)."


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def render(result: dict) -> str:
    env = result["environment"]
    where = env.get("gpu") or f"CPU ({env['cpu_count']} cores)"
    parts = [f"Measured {result['date']} on {where}, torch {env['torch']}, "
             f"`python -m benchmarks{' --quick' if result['quick'] else ''}` ({result['seconds']:.0f} s).\n",
             summary_table(result["figures"])]
    for name, text in result["details"].items():
        parts.append(f"\n#### {name}\n\n{text.strip()}")
    for name, err in result["errors"].items():
        parts.append(f"\n#### {name}: not measured\n\n`{err}`")
    return "\n".join(parts)


def update_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.is_file() else (
        f"# Performance\n\n{BEGIN}\n{END}\n")
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Latest results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    from wm_framework.train.checkpoint import atomic_write_text

    atomic_write_text(path, f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized runs of every benchmark")
    ap.add_argument("--only", default=",".join(ORDER), help="comma-separated subset of: " + ", ".join(ORDER))
    ap.add_argument("--json", default=str(HERE / "results.json"), help="where the JSON goes (default benchmarks/results.json)")
    ap.add_argument("--out", default=None, help="markdown file whose results block is refreshed (e.g. docs/performance.md)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    figures, details, errors, timings = [], {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="wm_bench_") as tmp:
        for name in [n for n in args.only.split(",") if n]:
            if name not in RUNNERS:
                raise SystemExit(f"--only: unknown benchmark '{name}'; benchmarks: {', '.join(ORDER)}")
            if not (HERE / f"{name}.py").is_file():
                errors[name] = f"benchmarks/{name}.py is not present"
                continue
            print(f"== {name}", file=sys.stderr, flush=True)
            buf, start = io.StringIO(), time.perf_counter()
            try:
                with contextlib.redirect_stdout(buf):
                    figures += RUNNERS[name](args.quick, tmp)
            except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
                errors[name] = f"{type(e).__name__}: {e}"
            timings[name] = time.perf_counter() - start
            details[name] = buf.getvalue()
            print(buf.getvalue(), file=sys.stderr)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "seconds": time.perf_counter() - t0,
              "environment": environment(), "figures": figures, "timings_s": timings, "details": details,
              "errors": errors}
    print(summary_table(figures))
    for name, err in errors.items():
        print(f"{name}: not measured ({err})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.out:
        update_doc(Path(args.out), render(result))
    return result


if __name__ == "__main__":
    main()
