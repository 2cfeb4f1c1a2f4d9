"""Window loading throughput: WindowSampler (ram / cache) against the obvious alternatives.

    python -m benchmarks.loader [--quick] [--json PATH]

Two synthetic but realistically compressible stores are written to a temp directory:

* Breakout-like: 210x160x3 uint8 frames (a mostly black screen, rows of coloured
  bricks that disappear over time, a moving ball and paddle), windows of 4 frames,
  frameskip 5 (the LeWM clip);
* CoinRun-like: 64x64x3 frames (sky gradient, textured ground, a moving sprite),
  windows of 16 frames, frameskip 1.

For each, random windows per second (batches of 32) from: WindowSampler in ram and
cache mode, a naive loader doing one Zarr read per window, per-sample reads from a
memory-mapped .npy, and fancy indexing a NumPy array already in RAM; plus the bytes
on disk against the raw bytes. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from wm_framework.data.inspect import bytes_on_disk
from wm_framework.data.sampler import WindowSampler
from wm_framework.data.store import EpisodeStore
from wm_framework.data.writer import StoreWriter

BATCH = 32


def breakout_frames(n: int, rng: np.random.Generator) -> np.ndarray:
    f = np.zeros((n, 210, 160, 3), np.uint8)
    f[:, 17:32, :] = 142  # score bar / top wall (grey)
    f[:, 32:196, :8] = f[:, 32:196, -8:] = 142  # side walls
    colors = [(200, 72, 72), (198, 108, 58), (180, 122, 48), (162, 162, 42), (72, 160, 72), (66, 72, 200)]
    alive = np.ones((6, 18), bool)
    for t in range(n):
        if t % 7 == 0:  # a brick gets hit now and then
            alive[rng.integers(6), rng.integers(18)] = False
        for r, c in enumerate(colors):
            for b in np.flatnonzero(alive[r]):
                f[t, 57 + 6 * r: 63 + 6 * r, 8 + 8 * b: 16 + 8 * b] = c
        bx, by = 8 + (3 * t) % 140, 100 + int(40 * np.sin(t / 9))
        f[t, by: by + 4, bx: bx + 2] = (200, 72, 72)
        px = 8 + int(60 + 55 * np.sin(t / 23))
        f[t, 189:193, px: px + 16] = (200, 72, 72)
    return f


def coinrun_frames(n: int, rng: np.random.Generator) -> np.ndarray:
    sky = np.linspace(90, 200, 64, dtype=np.float32)[:, None, None] * np.array([0.6, 0.8, 1.0], np.float32)
    base = np.broadcast_to(sky, (64, 64, 3)).copy()
    ground = rng.integers(60, 120, size=(16, 256, 3))  # a textured strip that scrolls
    f = np.empty((n, 64, 64, 3), np.uint8)
    for t in range(n):
        img = base.copy()
        off = (2 * t) % 192
        img[48:] = ground[:, off: off + 64]
        x, y = 20 + int(8 * np.sin(t / 5)), 36 - int(abs(6 * np.sin(t / 4)))
        img[y: y + 10, x: x + 8] = (230, 200, 40)
        f[t] = img.astype(np.uint8)  # procgen renders clean frames (no sensor noise)
    return f


def write_store(path: str, frames: np.ndarray, episode_len: int, rng) -> None:
    w = StoreWriter(path, env={"name": "synthetic", "params": {}},
                    obs_spec={"key": "pixels", "shape": list(frames.shape[1:]), "dtype": "uint8"},
                    action_spec={"type": "discrete", "n": 4}, label_names=["x"])
    for e, a in enumerate(range(0, len(frames), episode_len)):
        obs = frames[a: a + episode_len]
        n = len(obs)
        flags = np.zeros(n, bool)
        ep = {"obs": obs, "action": np.r_[rng.integers(0, 4, n - 1), -1], "reward": np.zeros(n, np.float32),
              "terminated": flags.copy(), "truncated": flags.copy(), "labels/x": np.zeros(n, np.float32)}
        ep["truncated"][-1] = True
        w.append_episode(ep, "random", e)


def rate(fn, seconds: float) -> float:
    """Windows per second of ``fn()`` (which returns a batch of BATCH windows)."""
    fn()  # warm-up (loads RAM mode, fills caches, faults pages in)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += BATCH
    return n / (time.perf_counter() - t0)


def bench(name: str, frames: np.ndarray, episode_len: int, length: int, fs: int, seconds: float, tmp: str) -> dict:
    rng = np.random.default_rng(0)
    path = os.path.join(tmp, f"{name}.zarr")
    t0 = time.perf_counter()
    write_store(path, frames, episode_len, rng)
    write_s = time.perf_counter() - t0
    store = EpisodeStore.open(path)
    all_eps = np.arange(store.num_episodes)
    ram = WindowSampler(store, all_eps, length, fs, mode="ram")
    cache = WindowSampler(store, all_eps, length, fs, mode="cache", ram_limit_bytes=frames.nbytes // 4)
    index = ram.window_index()
    rows0 = store.episode_starts[index[:, 0]] + index[:, 1]  # store row of each window's first frame
    offs = fs * np.arange(length)
    npy = os.path.join(tmp, f"{name}.npy")
    np.save(npy, frames)
    mm = np.load(npy, mmap_mode="r")
    zobs = store.zarr_array("obs")
    pick = lambda: rows0[rng.integers(0, len(rows0), BATCH)]  # noqa: E731

    def naive_zarr():  # one Zarr read per window, the way a simple Dataset.__getitem__ does it
        return np.stack([zobs[r: r + offs[-1] + 1][offs] for r in pick()])

    def mmap_npy():  # per-sample reads from a memory-mapped .npy
        return np.stack([mm[r + offs] for r in pick()])

    def numpy_ram():  # the ceiling: fancy indexing an array already in RAM
        return frames[pick()[:, None] + offs]

    def cache_in_order():  # a pass in store order (iter_batches(shuffle=False)): the cache-friendly case
        nonlocal in_order
        try:
            return next(in_order)
        except StopIteration:
            in_order = cache.iter_batches(BATCH)
            return next(in_order)

    in_order = cache.iter_batches(BATCH)
    rates = {
        "ram": rate(lambda: ram.sample(BATCH, rng), seconds),
        "cache": rate(lambda: cache.sample(BATCH, rng), seconds),
        "cache_in_order": rate(cache_in_order, seconds),
        "naive_zarr": rate(naive_zarr, seconds),
        "mmap_npy": rate(mmap_npy, seconds),
        "numpy_ram": rate(numpy_ram, seconds),
    }
    return {"name": name, "frames": int(len(frames)), "frame_shape": list(frames.shape[1:]), "window": length,
            "frameskip": fs, "windows_per_s": rates, "write_s": write_s,
            "obs_bytes_raw": int(frames.nbytes), "obs_bytes_on_disk": bytes_on_disk(os.path.join(path, "obs")),
            "store_bytes_on_disk": bytes_on_disk(path)}


def table(results: list[dict]) -> str:
    lines = ["| store | ram | cache (random) | cache (in order) | naive zarr | mmap .npy | numpy in RAM | ram / naive | ram / numpy | obs on disk / raw |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r["windows_per_s"]
        lines.append(
            f"| {r['name']} ({'x'.join(map(str, r['frame_shape']))}, L={r['window']}, fs={r['frameskip']}, "
            f"{r['frames']} frames) | {w['ram']:,.0f} | {w['cache']:,.0f} | {w['cache_in_order']:,.0f} | {w['naive_zarr']:,.0f} | {w['mmap_npy']:,.0f} "
            f"| {w['numpy_ram']:,.0f} | {w['ram'] / w['naive_zarr']:.1f}x | {w['ram'] / w['numpy_ram']:.2f}x "
            f"| {r['obs_bytes_on_disk'] / 2**20:.2f} / {r['obs_bytes_raw'] / 2**20:.0f} MB "
            f"(1/{r['obs_bytes_raw'] / max(r['obs_bytes_on_disk'], 1):.0f}) |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller stores, shorter timings (CI)")
    ap.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    n_breakout, n_coin, seconds = (400, 1500, 0.5) if args.quick else (1200, 6000, 2.0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="wm_bench_loader_") as tmp:
        results = [
            bench("breakout-like", breakout_frames(n_breakout, rng), 200, 4, 5, seconds, tmp),
            bench("coinrun-like", coinrun_frames(n_coin, rng), 500, 16, 1, seconds, tmp),
        ]
    print(table(results))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
