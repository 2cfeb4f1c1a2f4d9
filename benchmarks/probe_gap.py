"""Which env-step gap is the published probe protocol's "t+1"? Measured with the static baseline.

    python -m benchmarks.probe_gap                    # 10 episodes per policy, ~12k frames, ~30 s
    python -m benchmarks.probe_gap --episodes 2       # quick
    python -m benchmarks.probe_gap --store data/breakout_test.zarr   # an existing store

Collects real ALE Breakout episodes of the published held-out policies (heuristic +
random_active, seed 10 000, tiny frames: only the labels matter), then runs the probe
code itself (WindowSampler windows of 4 frames, frameskip 5, probed frame t = 2;
``extract_features`` + ``static_baseline``) for every gap of 1..5 env steps and prints
the static persistence R^2 of ball_pos / ball_vel / paddle_pos next to the published
figures (0.955 / 0.821 / 0.778), marking the gaps that reproduce each within 0.05.
The result decides ``ProbeConfig.protocol_gap`` (docs/probes.md).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

PUBLISHED = {"ball_pos": 0.955, "ball_vel": 0.821, "paddle_pos": 0.778}
TOLERANCE = 0.05


def measure(store, window: int = 4, frameskip: int = 5, max_gap: int = 5, policies=None) -> dict:
    """{gap: {task: (R^2, n)}} of the static baseline over the store's episodes (of ``policies``)."""
    from wm_framework.data.sampler import WindowSampler
    from wm_framework.stages.probe.probes import task_preset
    from wm_framework.stages.probe.features import extract_features
    from wm_framework.stages.probe.study import static_baseline

    episodes = np.arange(store.num_episodes)
    if policies:
        episodes = episodes[np.isin(store.episode_policy, policies)]
    sampler = WindowSampler(store, episodes, window, frameskip, mode="ram")
    fs = extract_features(None, sampler, set(), frame=window - 2, window=window, batch_size=4096, max_offset=max_gap)
    tasks = [t for t in task_preset("breakout")[0] if t.name in PUBLISHED]
    out = {}
    for gap in range(1, max_gap + 1):
        res = static_baseline({"test": fs}, tasks, gap=gap, n_boot=0)
        out[gap] = {name: (res[name]["test"]["r2"], res[name]["test"]["n"]) for name in PUBLISHED}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="measure this store instead of collecting one")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per policy to collect")
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--frameskip", type=int, default=5, help="env steps between window frames (the model's gap)")
    args = ap.parse_args(argv)

    from wm_framework.data.store import EpisodeStore

    if args.store:
        report(EpisodeStore.open(args.store), args.frameskip)
        return
    from wm_framework.data.collect import collect

    with tempfile.TemporaryDirectory(prefix="probe_gap_") as tmp:
        store = collect(f"{tmp}/breakout.zarr", env={"type": "breakout", "obs_size": [32, 32]},
                        policies=[{"type": "heuristic"}, {"type": "random_active"}], episodes=args.episodes,
                        max_steps=args.max_steps, workers=1, seed=10_000, progress=False)
        report(store, args.frameskip)


def report(store, frameskip: int) -> None:
    """Print the static R^2 per gap for all policies together and for each policy."""
    print(f"store: {store.path} ({store.num_episodes} episodes, {store.num_frames} frames, "
          f"policies {', '.join(store.policies())})")
    for policies in (None, *([p] for p in store.policies())):
        res = measure(store, frameskip=frameskip, max_gap=frameskip, policies=policies)
        print(f"\n{'all policies' if policies is None else policies[0]}: static R^2 (copy t as t+gap), * = within "
              f"{TOLERANCE} of the published figure")
        print("| gap (env steps) | " + " | ".join(f"{k} (pub. {v:.3f})" for k, v in PUBLISHED.items()) + " |")
        print("|---|" + "---|" * len(PUBLISHED))
        for gap, row in res.items():
            cells = [f"{r2:.3f}{'*' if abs(r2 - PUBLISHED[k]) <= TOLERANCE else ''} (n={n})" for k, (r2, n) in row.items()]
            print(f"| {gap} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
