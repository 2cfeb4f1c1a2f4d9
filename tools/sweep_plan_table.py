"""Planning results of a sweep, by configuration with its seeds pooled: a markdown table.

    python tools/sweep_plan_table.py runs/<sweep>

Reads ``sweep/<label>/plan.json`` of every run (written by ``wm plan <sweep>``, which may
have run in several invocations with ``--runs``), groups ``<config>_seed<s>`` labels by
config and pools their tasks. Per config: the planner's and the random baseline's
successes (k of n tasks), the mean final distance to the goal with a 95% bootstrap
interval over tasks, the mean distance at the start (what never moving would keep, if
the env stays put), and the median planning time per cycle.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np


def _interval(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(sweep: Path) -> str:
    groups: dict[str, list[dict]] = {}
    for path in sorted((sweep / "sweep").glob("*/plan.json")):
        config = re.sub(r"_seed\d+$", "", path.parent.name)
        groups.setdefault(config, []).append(json.loads(path.read_text()))
    if not groups:
        raise SystemExit(f"error: no sweep/*/plan.json under {sweep} (run `wm plan {sweep}` first)")
    lines = ["| config | runs | planner success | random success | final error (planner), mean [95% CI] | "
             "final error (random) | start error | plan s / cycle (median) |",
             "|---|---|---|---|---|---|---|---|"]
    for config, plans in groups.items():
        eps = [e for p in plans for e in p["episodes"]]
        rnd = [e for p in plans for e in p["random"]]
        fin = [e["final_error"] for e in eps if e.get("final_error") is not None]
        rfin = [e["final_error"] for e in rnd if e.get("final_error") is not None]
        start = [e["start_error"] for e in eps if e.get("start_error") is not None]
        secs = [t for e in eps for t in e["plan_seconds"]]
        lo, hi = _interval(fin) if fin else (float("nan"), float("nan"))
        lines.append(
            f"| {config} | {len(plans)} | {sum(e['success'] for e in eps)}/{len(eps)} | "
            f"{sum(e['success'] for e in rnd)}/{len(rnd)} | {np.mean(fin):.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{np.mean(rfin):.3f} | {np.mean(start):.3f} | {np.median(secs):.1f} |")
    s = plans[0]["summary"]
    lines.append(f"\nSettings: {s['planner']} {s['samples']} samples x {s['iterations']} iterations, horizon "
                 f"{s['horizon']}, cost {s['cost']}, context {s['context']} frames, k = {s['k']} env steps, budget "
                 f"{s['budget']}, checkpoint {s['checkpoint']}, {s['device']} with {s['torch_threads']} threads.")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/sweep_plan_table.py runs/<sweep>")
    print(table(Path(sys.argv[1])))
