"""Performance plumbing: uint8 to the device, FLOP counting, channels-last, the benchmark suite's output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))


def test_uint8_frames_stay_uint8_until_the_device():
    from wm_framework.model import prepare_obs
    from wm_framework.train.loop import to_device

    batch = {"obs": np.full((2, 3, 8, 8, 3), 255, np.uint8), "action": np.zeros((2, 3, 1), np.int64), "note": "x"}
    on = to_device(batch, torch.device("cpu"))
    assert on["obs"].dtype == torch.uint8 and on["note"] == "x"  # 1 byte per pixel crosses the bus
    x = prepare_obs(on["obs"])
    assert x.shape == (2, 3, 3, 8, 8) and x.dtype == torch.float32 and float(x.max()) == 1.0


def test_flop_count_of_a_linear_training_step_is_6_b_in_out():
    from benchmarks.train import flops_per_step

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(32, 16, bias=False)

        def forward(self, batch):
            return {"pred": self.fc(batch["x"]), "target": batch["y"]}

    losses = {"mse": (1.0, lambda out, b: (out["pred"] - out["target"]).square().mean())}
    batch = {"x": torch.randn(8, 32, requires_grad=False), "y": torch.randn(8, 16)}
    from contextlib import nullcontext

    flops = flops_per_step(Lin(), losses, batch, nullcontext)
    # forward 2*B*in*out; backward: grad wrt the weight only (input needs no grad) = 2*B*in*out
    assert flops == 2 * (2 * 8 * 32 * 16)


def test_channels_last_option_converts_the_cnn(tmp_path, monkeypatch):
    from benchmarks.train import MODELS, _recipe, write_store
    from wm_framework.recipe import validate
    from wm_framework.runs.context import RunContext, new_run_dir
    from wm_framework.train.loop import train

    torch.set_num_threads(1)
    spec = dict(MODELS["nextframe"], batch=4)
    store = str(tmp_path / "s.zarr")
    write_store(store, spec, frames=60, episode_len=30)
    data = _recipe("nf", dict(spec, channels_last=True), store, steps=2, batch=4, device="cpu")
    ctx = RunContext(new_run_dir("nf", tmp_path / "runs"), validate(data))
    built = {}
    original = ctx.build_model

    def capture(train=False):
        built["m"] = original(train=train)
        return built["m"]

    monkeypatch.setattr(ctx, "build_model", capture)
    train(ctx, progress=False)
    convs = [m for m in built["m"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not all(c.weight.is_contiguous() for c in convs)  # really NHWC, not merely both


def test_train_benchmark_row_for_the_small_mlp(tmp_path):
    from benchmarks.train import MODELS, bench_model

    torch.set_num_threads(1)
    row = bench_model("blocks_mlp", dict(MODELS["blocks_mlp"], batch=16), steps=4, device="cpu", tmp=str(tmp_path),
                      peak=1e10)
    assert row["trainer_samples_per_s"] > 0 and row["bare_samples_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["trainer_samples_per_s"] / row["bare_samples_per_s"])
    assert row["flops_per_step"] > 6 * 16 * row["params"] * 0.5  # ~6 FLOPs per parameter per sample, x window
    assert 0 < row["mfu_trainer"] < 10


def test_suite_summary_and_doc_block_keep_the_hand_written_text(tmp_path):
    from benchmarks.__main__ import BEGIN, END, _figure, render, summary_table, update_doc

    figs = [_figure("loader", "w/s", 900.0, "ours", 100.0, "naive", "windows/s"),
            _figure("plan", "cycle", 0.5, "batched", 10.0, "loop", "s", higher_is_better=False)]
    table = summary_table(figs)
    assert "| loader | w/s | 900 (ours) | 100 (naive) | 9.00x |" in table
    assert "20.00x" in table  # times: baseline / ours
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## GPU path\n\nkept\n")
    result = {"date": "today", "quick": True, "seconds": 1.0, "figures": figs, "details": {"loader": "| a |"},
              "errors": {"collect": "not present"}, "environment": {"cpu_count": 2, "torch": "2.x"}}
    update_doc(doc, render(result))
    text = doc.read_text()
    assert "old table" not in text and "| loader | w/s |" in text and "collect: not measured" in text
    assert text.startswith("# Performance\n\nintro") and text.rstrip().endswith("kept")


def test_gpu_script_skips_cleanly_without_cuda_and_runs_tiny_on_cpu(tmp_path, capsys):
    from benchmarks import gpu_lewm

    if torch.cuda.is_available():
        pytest.skip("has CUDA: the skip path is not reachable")
    assert gpu_lewm.main([]) is None
    assert "skipped" in capsys.readouterr().out
    res = gpu_lewm.main(["--allow-cpu", "--tiny", "--steps", "2", "--warmup", "1", "--batch", "4",
                         "--json", str(tmp_path / "g.json")])
    assert res["samples_per_s"] > 0 and res["flops_per_step"] > 0
    assert json.loads((tmp_path / "g.json").read_text())["batch"] == 4


def test_ensemble_benchmark_compares_same_sized_models():
    from benchmarks.ensemble import bench

    torch.set_num_threads(1)
    r = bench(k=2, batch=4, t=4, n_layer=1, n_embd=16, n_head=2, reps=1)
    assert r["batched_steps_per_s"] > 0 and r["loop_steps_per_s"] > 0 and r["members"] == 2


def test_precision_benchmark_reports_auto_choice_and_both_rates(tmp_path, monkeypatch):
    """One run of benchmarks.precision at smoke size: the auto choice, the matmul ratio and
    both training rates when forced (bf16 is emulated on CPUs without it: slower, still real)."""
    from benchmarks import precision

    monkeypatch.setattr(precision, "SMOKE", dict(precision.SMOKE, image=32, batch=2,
                                                 encoder=dict(precision.SMOKE["encoder"], image_size=32)))
    out = tmp_path / "p.json"
    res = precision.main(["--steps", "1", "--threads", "1", "--force", "--json", str(out)])
    assert res["auto"] == "fp32" and "no native bf16" in res["auto_reason"]  # conftest: WM_CPU_BF16=0
    row = res["lewm"]
    assert row["fp32_samples_per_s"] > 0 and row["bf16_samples_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["bf16_samples_per_s"] / row["fp32_samples_per_s"])
    assert res["matmul"]["fp32_gflops"] > 0 and res["matmul"]["bf16_gflops"] > 0
    assert json.loads(out.read_text())["lewm"]["params"] == row["params"]
