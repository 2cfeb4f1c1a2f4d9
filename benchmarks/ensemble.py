"""Ensemble forward: the GPT state model's K members in one batched forward vs a loop over members.

    python -m benchmarks.ensemble [--quick] [--json PATH]

``GPTEnsembleCore(ensemble_size=K)`` (weights stacked on a leading member dim, one
``baddbmm`` per layer, attention over K*B sequences) against K separate
``GPTEnsembleCore(ensemble_size=1)`` models of the same size called one after another:
training steps (forward + backward) per second, same inputs, same total parameters.

Batching K members saves the per-operation overhead of K-1 of them (Python, autograd,
dispatch), never their arithmetic, so the gain has a ceiling. Each row also measures one
member's step at batch 1 x 1 (``overhead_ms``: almost no arithmetic) and at the
benchmark's size (``member_ms``); with compute ``C = member - overhead``, batching K
members can at best take ``overhead + K*C``: ``ceiling = K*member / (overhead + K*C)``.
"""


from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def bench(k: int, batch: int, t: int, n_layer: int, n_embd: int, n_head: int, reps: int, device: str = "cpu") -> dict:
    import torch

    from wm_plugins.gpt_state.model import GPTEnsembleCore

    torch.manual_seed(0)
    d_in, d_out = 21, 14
    x = torch.randn(batch, t, d_in, device=device)
    y = torch.randn(batch, t, d_out, device=device)
    batched = GPTEnsembleCore(d_in, d_out, t, n_layer, n_head, n_embd, k).to(device)
    members = [GPTEnsembleCore(d_in, d_out, t, n_layer, n_head, n_embd, 1).to(device) for _ in range(k)]

    def step_batched():
        pred = batched(x)  # [B, T, K, D]
        loss = (pred - y.unsqueeze(2)).square().mean()
        loss.backward()

    def step_loop():
        loss = sum((m(x)[:, :, 0] - y).square().mean() for m in members) / k
        loss.backward()

    def rate(fn) -> float:
        fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        return reps / (time.perf_counter() - t0)

    one, x1, y1 = members[0], x[:1, :1], y[:1, :1]

    def step_member():
        (one(x)[:, :, 0] - y).square().mean().backward()

    def step_member_tiny():
        (one(x1)[:, :, 0] - y1).square().mean().backward()

    # Interleave the two so that load from other processes hits both alike.
    b1, l1 = rate(step_batched), rate(step_loop)
    b2, l2 = rate(step_batched), rate(step_loop)
    batched_rate, loop_rate = max(b1, b2), max(l1, l2)
    member_ms = 1000 / max(rate(step_member), rate(step_member))
    overhead_ms = 1000 / max(rate(step_member_tiny), rate(step_member_tiny))
    compute_ms = max(member_ms - overhead_ms, 0.0)
    return {"members": k, "batch": batch, "steps": t, "n_layer": n_layer, "n_embd": n_embd, "device": device,
            "batched_steps_per_s": batched_rate, "loop_steps_per_s": loop_rate, "ratio": batched_rate / loop_rate,
            "member_ms": member_ms, "overhead_ms": overhead_ms,
            "ceiling": k * member_ms / (overhead_ms + k * compute_ms)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def table(rows: list[dict]) -> str:
    lines = ["| members K | model | batch x steps | batched fwd+bwd / s | loop over members / s | batched / loop "
             "| one member: step / at batch 1x1 (ms) | ceiling of batching |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['members']} | {r['n_layer']} layers x {r['n_embd']} | {r['batch']} x {r['steps']} "
                     f"| {r['batched_steps_per_s']:,.1f} | {r['loop_steps_per_s']:,.1f} | {r['ratio']:.2f}x "
                     f"| {r['member_ms']:.2f} / {r['overhead_ms']:.2f} | {r['ceiling']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (CI)")
    ap.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    reps = 5 if args.quick else 20
    if device == "cpu":
        configs = [(2, 16, 16, 2, 64, 2), (4, 16, 16, 2, 64, 2), (8, 16, 16, 2, 64, 2)]
    else:  # the ARX5 model: 6 x 384, history 32, batch 64
        configs = [(2, 64, 32, 6, 384, 12), (4, 64, 32, 6, 384, 12), (8, 64, 32, 6, 384, 12)]
    rows = [bench(k, b, t, nl, ne, nh, reps, device) for k, b, t, nl, ne, nh in configs]
    print(table(rows))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
