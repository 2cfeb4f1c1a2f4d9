"""Time of one CEM planning cycle per model, batched vs a sample-by-sample loop.

    python -m benchmarks.plan [--quick] [--models mlp,gpt,lewm] [--threads 1] [--json PATH]

A planning cycle at the reference settings (REFERENCE §1) is 30 CEM iterations, each
rolling out 300 candidate sequences of 5 action blocks and scoring them against a goal
latent. Models (random weights: timing does not depend on training):

* ``mlp``: blocks `mlp` encoder + `mlp` predictor on a 14-D state (history 1);
* ``gpt``: the GPT state model at its default size (6 layers, 12 heads, 384 wide,
  ensemble of 2, history 32) with a full 32-frame context, continuous 7-D actions;
* ``lewm``: LeWM ViT-Tiny encoder at 224x224 + the `ar_transformer` predictor (history
  3), Breakout's 4 discrete actions with frameskip 5 (blocks of 20 one-hot values).

For each model it runs the real planner (``cem`` / ``cem_discrete``) for ``I``
iterations and reports the measured time per iteration and the full 30-iteration cycle:
measured when ``I`` = 30, else **extrapolated** as encode + 30 x per-iteration (each
CEM iteration does identical work, so this is linear). The baseline rolls out ``S``
candidates one at a time; its per-iteration time is extrapolated to 300 candidates.
``--quick`` lowers ``I`` and ``S`` for the big models. Prints a markdown table.

A second table times one iteration's 300 rollouts with the context steps shared by all
candidates computed once (``predict_last_shared``, the planner's default) against
today's batched rollouts that repeat them per candidate (``share_prefix=False``),
alternated in the same run, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from wm_framework.model import ActionSpec, WorldModel
from wm_framework.stages.plan.cem import CEMPlanner, DiscreteCEMPlanner, Goal
from wm_framework.stages.plan.rollout import PlanContext, rollout_candidates, rollout_one_by_one

SAMPLES, ITERATIONS, ELITES, HORIZON = 300, 30, 30, 5


def build(name: str):
    """(model, context obs [1,C,...], past action blocks [1,C-1,A]) for a benchmark model."""
    from wm_framework.runs.model_building import CONTEXT_KEYS_ENCODER, CONTEXT_KEYS_PREDICTOR, create_with_context

    if name == "mlp":
        ctx = dict(obs_shape=[14], action_kind="continuous", n_actions=7, frameskip=1, action_dim=7, history=1)
        enc, pred = {"type": "mlp", "latent_dim": 32}, {"type": "mlp"}
        obs = torch.randn(1, 1, 14)
    elif name == "gpt":
        ctx = dict(obs_shape=[14], action_kind="continuous", n_actions=7, frameskip=1, action_dim=7, history=32)
        enc, pred = {"type": "state_norm"}, {"type": "gpt_ensemble"}
        obs = torch.randn(1, 32, 14)
    elif name == "lewm":
        ctx = dict(obs_shape=[3, 224, 224], action_kind="discrete", n_actions=4, frameskip=5, action_dim=20, history=3)
        enc, pred = {"type": "vit", "preset": "tiny"}, {"type": "ar_transformer"}
        obs = torch.rand(1, 3, 3, 224, 224)
    else:
        raise SystemExit(f"unknown model {name!r}; use mlp, gpt, lewm")
    torch.manual_seed(0)
    encoder = create_with_context("encoders", enc, ctx, CONTEXT_KEYS_ENCODER)
    predictor = create_with_context("predictors", pred, dict(ctx, latent_dim=encoder.out_dim), CONTEXT_KEYS_PREDICTOR)
    model = WorldModel(encoder, predictor, ActionSpec(ctx["action_kind"], ctx["n_actions"], ctx["frameskip"])).eval()
    past = torch.zeros(1, obs.shape[1] - 1, model.action_spec.block_dim)
    return model, obs, past


def bench(name: str, iterations: int, loop_samples: int, repeats: int = 2, *, built=None, device: str = "cpu") -> dict:
    """Time one planning cycle of ``build(name)`` (or of ``built``, a (model, obs, past) triple
    of the same form) on ``device``."""
    model, obs, past = built if built is not None else build(name)
    model, obs, past = model.to(device), obs.to(device), past.to(device)
    params = sum(p.numel() for p in model.parameters())
    gpu = str(device) != "cpu"
    if gpu:  # a first, untimed encode: cold kernel selection is not part of a planning cycle
        PlanContext.from_obs(model, obs, past)
    _sync(device)
    t = time.perf_counter()
    context = PlanContext.from_obs(model, obs, past)
    goal = Goal(z=model.encode(obs[:, -1:])[0, 0])
    _sync(device)
    encode_s = time.perf_counter() - t  # the context and the goal are encoded once per cycle
    cls = DiscreteCEMPlanner if model.action_spec.kind == "discrete" else CEMPlanner
    kw = {} if cls is DiscreteCEMPlanner else {"init_std": 1.0}
    # Warm-up. On a GPU at the full candidate count: the first call of each shape picks its
    # kernels, which would otherwise land in the first timed iteration.
    warm = SAMPLES if gpu else 2
    rollout_candidates(model, context, torch.zeros(warm, HORIZON, model.action_spec.block_dim, device=device))
    planner = cls(samples=SAMPLES, iterations=iterations, elites=ELITES, horizon=HORIZON, seed=0, **kw)
    res = planner.plan(model, context, goal)
    per_iter = res.seconds / iterations  # includes the final one-candidate scoring (negligible)
    cycle = encode_s + ITERATIONS * per_iter
    # Shared prefix vs today's batched rollouts: the same 300 candidates, alternated.
    future = torch.randn(SAMPLES, HORIZON, model.action_spec.block_dim, device=device)
    times = {True: [], False: []}
    for _ in range(repeats):
        for share in (False, True):
            _sync(device)
            t = time.perf_counter()
            rollout_candidates(model, context, future, share_prefix=share)
            _sync(device)
            times[share].append(time.perf_counter() - t)
    shared_s, full_s = min(times[True]), min(times[False])
    # Baseline: the same rollouts, one candidate at a time.
    spec = model.action_spec
    future = torch.randn(loop_samples, HORIZON, spec.block_dim, device=device)
    _sync(device)
    t = time.perf_counter()
    rollout_one_by_one(model, context, future)
    _sync(device)
    loop_per_iter = (time.perf_counter() - t) / loop_samples * SAMPLES
    return {"model": name, "params": params, "iterations_run": iterations, "loop_samples_run": loop_samples,
            "encode_s": encode_s, "batched_per_iteration_s": per_iter, "cycle_s": cycle,
            "cycle_measured": iterations == ITERATIONS, "loop_per_iteration_s": loop_per_iter,
            "loop_cycle_s": encode_s + ITERATIONS * loop_per_iter, "speedup": loop_per_iter / per_iter,
            "rollout_shared_prefix_s": shared_s, "rollout_full_context_s": full_s, "prefix_speedup": full_s / shared_s}


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):  # CUDA runs asynchronously: time finished work, not launches
        torch.cuda.synchronize()


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations / loop samples for the big models")
    ap.add_argument("--models", default="mlp,gpt,lewm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternated repeats of the shared-prefix comparison")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = {"mlp": (30, 300), "gpt": (1, 5) if args.quick else (3, 20), "lewm": (2, 10) if args.quick else (4, 40)}
    rows = []
    for name in args.models.split(","):
        it, ls = plan[name]
        rows.append(bench(name, it, ls, args.repeats))
    print(f"\nOne planning cycle: {SAMPLES} samples x {ITERATIONS} iterations, horizon {HORIZON}, "
          f"{args.threads} CPU thread(s), torch {torch.__version__}\n")
    print("| model | params | per iteration, batched (s) | cycle (s) | per iteration, loop (s) | loop cycle (s) | batched speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mark = "" if r["cycle_measured"] else f" (extrapolated from {r['iterations_run']} it.)"
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['batched_per_iteration_s']:.4f} | {r['cycle_s']:.2f}{mark} | "
              f"{r['loop_per_iteration_s']:.3f} (from {r['loop_samples_run']} samples) | {r['loop_cycle_s']:.1f} | "
              f"{r['speedup']:.1f}x |")
    print(f"\nShared context computed once vs repeated per candidate ({SAMPLES} candidates, horizon {HORIZON}, "
          "best of the alternated repeats):\n")
    print("| model | rollouts, context per candidate (s) | rollouts, shared context once (s) | speed-up |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['rollout_full_context_s']:.3f} | {r['rollout_shared_prefix_s']:.3f} | "
              f"{r['prefix_speedup']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
