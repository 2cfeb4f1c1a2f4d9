"""Collection throughput on Breakout: the whole pipeline against the bare emulator.

    python -m benchmarks.collect            # 2 processes, ~16k frames per measurement
    python -m benchmarks.collect --quick    # 1 process, a few seconds
    python -m benchmarks.collect --returns  # also: mean return of each policy over 20 episodes

"collect" is ``wm_framework.data.collect.collect`` with the ``heuristic`` policy and labels:
env + policy + labels + Zstd-compressed Zarr writes. "raw ALE" steps
``ALE/Breakout-v5`` (unwrapped, frameskip 4, native RGB) with random actions and
keeps nothing. Both use the same number of processes (spawned, start-up included)
and produce about the same number of frames; each column is measured ``--repeat``
times, interleaved, and keeps its best rate (the machine may be shared); the table
prints frames/s and the ratio (target: collect >= 70% of raw). A middle column runs env + labels +
policy in the same layout without storing anything, which separates the env
plugin's cost from the store's. Figures go into docs/perf_collect.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np


def _raw_worker(args: tuple[int, int]) -> int:
    """Step the bare emulator ``frames`` times with random actions (what collection cannot beat)."""
    frames, seed = args
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    env = gymnasium.make("ALE/Breakout-v5", frameskip=4, repeat_action_probability=0.0).unwrapped
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        _, _, term, trunc, _ = env.step(int(rng.integers(4)))
        if term or trunc:
            env.reset()
    env.close()
    return frames


def raw_rate(total_frames: int, workers: int) -> float:
    """Frames/s of bare ALE stepping over ``workers`` processes (start-up included, like collect)."""
    per = total_frames // workers
    t0 = time.perf_counter()
    if workers == 1:
        done = _raw_worker((per, 0))
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            done = sum(pool.map(_raw_worker, [(per, s) for s in range(workers)]))
    return done / (time.perf_counter() - t0)


def _env_worker(args: tuple[int, int, dict]) -> int:
    """The plugin's share alone: env + labels + heuristic policy, nothing stored."""
    frames, seed, env_spec = args
    import wm_framework
    from wm_framework.plugins import get_registry

    params = {k: v for k, v in env_spec.items() if k != "type"}
    env = wm_framework.make_env(env_spec["type"], **params)
    policy = get_registry().create("policies", "heuristic", env)
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    for _ in range(frames):
        obs, _, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            obs, info = env.reset()
    env.close()
    return frames


def env_rate(total_frames: int, workers: int, env: dict) -> float:
    """Frames/s of env + labels + heuristic policy without storage, same process layout as raw."""
    per = total_frames // workers
    t0 = time.perf_counter()
    if workers == 1:
        done = _env_worker((per, 0, env))
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            done = sum(pool.map(_env_worker, [(per, s, env) for s in range(workers)]))
    return done / (time.perf_counter() - t0)


def collect_rate(env: dict, episodes: int, max_steps: int, workers: int) -> tuple[float, int]:
    """(frames/s, frames) of wm_framework.data.collect with the heuristic policy into a fresh store."""
    from wm_framework.data.collect import collect

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = collect(os.path.join(tmp, "bench.zarr"), env=env, policies=[{"type": "heuristic"}],
                        episodes=episodes, max_steps=max_steps, workers=workers, progress=False)
        elapsed = time.perf_counter() - t0
        frames = int(store.num_frames)
    return frames / elapsed, frames


def policy_returns(episodes: int = 20, max_steps: int | None = None) -> dict[str, float]:
    """Mean episode return of every Breakout policy over ``episodes`` full episodes."""
    import wm_framework
    from wm_framework.plugins import get_registry

    env = wm_framework.make_env("breakout", max_episode_steps=max_steps)
    out = {}
    for name in ("center", "heuristic", "passive", "random_active", "wall_hugger"):
        policy = get_registry().create("policies", name, env)
        total = 0.0
        for seed in range(episodes):
            obs, info = env.reset(seed=seed)
            policy.reset(seed)
            done = False
            while not done:
                obs, reward, term, trunc, info = env.step(policy(obs, info))
                total += reward
                done = term or trunc
        out[name] = total / episodes
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 process, few frames (a smoke check)")
    parser.add_argument("--workers", type=int, default=None, help="processes for both sides (default 2; 1 with --quick)")
    parser.add_argument("--episodes-per-worker", type=int, default=8,
                        help="1000-step episodes per process (start-up is paid once, so short runs understate rates)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="measure every column this many times, interleaved, and keep each column's best "
                             "(the machine may be shared: the best run is the least disturbed one)")
    parser.add_argument("--returns", action="store_true", help="also measure each policy's mean return (20 full episodes)")
    args = parser.parse_args(argv)
    workers = args.workers or (1 if args.quick else 2)
    episodes, max_steps = (2, 500) if args.quick else (args.episodes_per_worker * workers, 1000)

    rows = []
    for label, env in (("native 210x160 RGB", {"type": "breakout"}),
                       ("84x84 RGB (PIL resize)", {"type": "breakout", "obs_size": [84, 84]})):
        if args.quick and "84" in label:
            continue
        rate = no_store = raw = 0.0
        for _ in range(max(1, args.repeat)):
            r, frames = collect_rate(env, episodes, max_steps, workers)
            rate = max(rate, r)
            no_store = max(no_store, env_rate(frames, workers, env))
            raw = max(raw, raw_rate(frames, workers))
        rows.append((label, frames, rate, no_store, raw))

    print(f"\nBreakout collection, {workers} process(es), heuristic policy + labels -> Zarr (Zstd), "
          f"best of {max(1, args.repeat)}\n")
    print("| observation | frames | collect (frames/s) | env+policy+labels, no store (frames/s) "
          "| raw ALE (frames/s) | collect / raw | env+policy+labels / raw |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, frames, rate, no_store, raw in rows:
        print(f"| {label} | {frames} | {rate:,.0f} | {no_store:,.0f} | {raw:,.0f} | {rate / raw:.0%} | {no_store / raw:.0%} |")

    if args.returns:
        print("\nMean return over 20 full episodes (seeds 0-19, no step cap)\n")
        print("| policy | mean return |")
        print("|---|---:|")
        for name, ret in policy_returns().items():
            print(f"| {name} | {ret:.1f} |")


if __name__ == "__main__":
    main()
