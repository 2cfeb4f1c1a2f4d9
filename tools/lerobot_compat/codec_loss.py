"""What an `h264` LeRobot export costs in pixel accuracy: collect small stores, export them,
import them back, and compare every frame with the original (the table in
docs/datasets.md, "LeRobot v3.0 datasets").

Run in the project's venv (no lerobot needed: our importer reads the export back):

    python tools/lerobot_compat/codec_loss.py [--out /tmp/codec_loss]

Prints a markdown table: mean absolute error in uint8 levels per pixel and channel, its
99th percentile, the share of values off by more than 8 levels, and the video bytes per frame.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

#: (name, env table, policy, episodes, max steps): toy balls of even and odd sizes, Breakout at
#: its native size and resized to 84x84.
CASES = [
    ("toy ball 17x17 (odd: padded)", {"type": "bouncing_ball", "size": 17, "max_steps": 60}, "random", 4, 60),
    ("toy ball 32x32", {"type": "bouncing_ball", "size": 32, "max_steps": 60}, "random", 4, 60),
    ("toy ball 64x64", {"type": "bouncing_ball", "size": 64, "max_steps": 60}, "random", 4, 60),
    ("Breakout 210x160", {"type": "breakout"}, "random_active", 2, 300),
    ("Breakout 84x84", {"type": "breakout", "obs_size": [84, 84]}, "random_active", 2, 300),
]


def measure(name: str, env: dict, policy: str, episodes: int, max_steps: int, root: Path, codec: str) -> dict:
    from wm_framework.data.collect import collect
    from wm_framework.data.importers import import_store
    from wm_framework.data.lerobot_export import export_lerobot
    from wm_framework.data.store import EpisodeStore

    d = root / name.split(" (")[0].replace(" ", "_")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    collect(str(d / "s.zarr"), env=env, policies=[{"type": policy}], episodes=episodes, max_steps=max_steps,
            workers=1, seed=0, progress=False)
    export_lerobot(d / "s.zarr", d / "lr", codec=codec, progress=False)
    import_store("lerobot", d / "lr", d / "back.zarr")
    a, b = EpisodeStore.open(d / "s.zarr"), EpisodeStore.open(d / "back.zarr")
    x = a.read("obs", 0, a.num_frames).astype(np.int16)
    y = b.read("obs", 0, b.num_frames).astype(np.int16)
    err = np.abs(x - y)
    video = sum(f.stat().st_size for f in (d / "lr" / "videos").rglob("*.mp4"))
    return {"frames": name, "mean": float(err.mean()), "p99": float(np.percentile(err, 99)),
            "over8": float((err > 8).mean()), "bytes": video / a.num_frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/codec_loss", help="Working directory (stores and exports).")
    ap.add_argument("--codec", default="h264", help="h264 | lossless")
    args = ap.parse_args()
    t0 = time.time()
    rows = [measure(*case, Path(args.out), args.codec) for case in CASES]
    print("| frames | mean abs error | 99th percentile | share of values off by > 8 | video bytes / frame |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['frames']} | {r['mean']:.2f} | {r['p99']:.0f} | {100 * r['over8']:.1f}% | {r['bytes']:.0f} |")
    print(f"\n{args.codec}, {time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
