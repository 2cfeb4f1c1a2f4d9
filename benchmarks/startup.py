"""CLI start-up: `wm --help` (whole process) against `python -c "import typer, rich"`.

    python -m benchmarks.startup [--runs 7]

The yardstick is the floor any Typer + Rich CLI pays; the ratio is what wm-framework
adds on top (entry-point scan, plugin modules, registration). Runs are interleaved so
a busy machine slows both sides alike; the figure is the median of each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def measure(runs: int = 7) -> dict:
    wm = shutil.which("wm")
    ours_cmd = [wm, "--help"] if wm else [sys.executable, "-m", "wm_framework.cli", "--help"]
    base_cmd = [sys.executable, "-c", "import typer, rich"]
    _time(ours_cmd), _time(base_cmd)  # warm the file cache
    ours, base = [], []
    for _ in range(runs):
        ours.append(_time(ours_cmd))
        base.append(_time(base_cmd))
    o, b = statistics.median(ours), statistics.median(base)
    return {"runs": runs, "wm_help_s": o, "typer_rich_s": b, "ratio": o / b}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    r = measure(args.runs)
    print(f"| command | median of {r['runs']} (s) |\n|---|---|\n| `wm --help` | {r['wm_help_s']:.3f} |\n"
          f"| `python -c \"import typer, rich\"` | {r['typer_rich_s']:.3f} |\n\nratio: {r['ratio']:.2f}x")
    return r


if __name__ == "__main__":
    main()
