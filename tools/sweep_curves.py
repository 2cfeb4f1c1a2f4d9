"""Loss curves of a seeded sweep, by configuration: a markdown table and a plot.

    python tools/sweep_curves.py runs/<sweep> [--key val/loss] [--out curves.png]

Reads ``sweep/<label>/metrics.jsonl`` of every run and groups labels that differ only
in their seed (``...,seed=<s>`` from a grid or ``..._seed<s>`` from ``sweep.seeds``).
The table gives, at every step where ``--key`` was logged, each configuration's mean
over seeds and the seed range (min-max); the plot draws every run (one colour per
configuration), so "the same curve within noise" can be seen: the gap between two
configurations against the gap between seeds of one.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

SEED = re.compile(r"(,seed=\d+|_seed\d+)$|^seed=\d+,?|,seed=\d+(?=,)")


def config_of(label: str) -> str:
    """The label without its seed part: "precision=bf16,seed=1" -> "precision=bf16"."""
    return SEED.sub("", label) or "(all)"


def read_curves(sweep: Path, key: str) -> dict[str, dict[str, dict[int, float]]]:
    """{config: {label: {step: value}}} for every run that logged ``key``."""
    groups: dict[str, dict[str, dict[int, float]]] = {}
    for metrics in sorted((sweep / "sweep").glob("*/metrics.jsonl")):
        curve = {}
        for line in metrics.read_text().splitlines():
            rec = json.loads(line)
            if key in rec and "step" in rec:
                curve[int(rec["step"])] = float(rec[key])
        if curve:
            groups.setdefault(config_of(metrics.parent.name), {})[metrics.parent.name] = curve
    if not groups:
        raise SystemExit(f"error: no sweep/*/metrics.jsonl under {sweep} logs {key!r}")
    return groups


def table(groups: dict, key: str) -> str:
    configs = list(groups)
    steps = sorted({s for runs in groups.values() for c in runs.values() for s in c})
    head = "| step | " + " | ".join(f"{c}: {key} mean [min, max] (n)" for c in configs) + " |"
    lines = [head, "|---|" + "---|" * len(configs)]
    for s in steps:
        cells = []
        for c in configs:
            v = [run[s] for run in groups[c].values() if s in run]
            cells.append(f"{np.mean(v):.4f} [{min(v):.4f}, {max(v):.4f}] ({len(v)})" if v else "—")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(groups: dict, key: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (config, runs) in enumerate(groups.items()):
        for j, (label, curve) in enumerate(runs.items()):
            steps = sorted(curve)
            ax.plot(steps, [curve[s] for s in steps], color=f"C{i}", alpha=0.8, marker="o", markersize=3,
                    linestyle="-" if j == 0 else "--", label=config if j == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_yscale("log")
    ax.legend(title="config (line style = seed)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="a sweep's run directory (holds sweep/<label>/)")
    ap.add_argument("--key", default="val/loss", help="metric to compare (default val/loss)")
    ap.add_argument("--out", type=Path, help="also plot the curves to this PNG")
    args = ap.parse_args(argv)
    groups = read_curves(args.sweep, args.key)
    print(table(groups, args.key))
    if args.out:
        plot(groups, args.key, args.out)
        print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
