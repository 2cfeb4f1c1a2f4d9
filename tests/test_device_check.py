"""benchmarks.device_check: the prepared GPU command, exercised on a CPU at tiny size.

The real run happens on a lent GPU with minutes to spare, so everything that can go wrong
before the first figure (imports, argument handling, every section's code path, the
files it writes, the skip without CUDA) is checked here first.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

# Per section, the figures that must be numbers (a nested key as a tuple).
FIGURES = {
    "matmul_peak": ["peak_flops"],
    "lewm_eager": ["samples_per_s", "mfu", "flops_per_step", "peak_flops", "warmup_s"],
    "sampler": [("ram", "windows_per_s"), ("cache", "windows_per_s"), "windows_per_s", "lewm_consumes_windows_per_s",
                "ratio"],
    "plan": ["cycle_s", "batched_per_iteration_s", "loop_cycle_s", "speedup"],
    "nextframe": ["trainer_samples_per_s", "bare_samples_per_s", "samples_per_s", "flops_per_step"],
    "gpt_state": ["samples_per_s", "loop_samples_per_s", "ratio"],
    "lewm_compile": ["samples_per_s", "mfu", "flops_per_step"],
}


def _get(d: dict, key):
    for k in key if isinstance(key, tuple) else (key,):
        d = d[k]
    return d


def test_tiny_run_on_cpu_records_every_section(tmp_path):
    from benchmarks import device_check

    out = tmp_path / "gpu"
    report = device_check.main(["--allow-cpu", "--tiny", "--out", str(out)])
    data = json.loads((out / "device_check.json").read_text())
    assert data["sections"].keys() == device_check.SECTIONS.keys() == FIGURES.keys()
    assert data["command"] == f"python -m benchmarks.device_check --allow-cpu --tiny --out {out}"
    assert data["total_wall_s"] > 0 and data["environment"]["torch"] == torch.__version__
    for name, res in data["sections"].items():
        assert isinstance(res["wall_s"], float) and res["wall_s"] >= 0, name
        if name == "lewm_compile" and "error" in res:  # a platform without a working compiler: recorded, not fatal
            assert isinstance(res["error"], str) and res["error"]
            continue
        assert "error" not in res, (name, res.get("error"))
        for key in FIGURES[name]:
            v = _get(res, key)
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0, (name, key, v)
    sampler = data["sections"]["sampler"]
    assert isinstance(sampler["sampler_keeps_up"], bool)
    assert sampler["ratio"] == pytest.approx(sampler["windows_per_s"] / sampler["lewm_consumes_windows_per_s"])
    # the sampler is compared with the fastest LeWM step measured, compiled or not
    rates = [data["sections"][s]["samples_per_s"] for s in ("lewm_eager", "lewm_compile")
             if "error" not in data["sections"][s]]
    assert sampler["lewm_consumes_windows_per_s"] == pytest.approx(max(rates))
    assert report["sections"]["plan"]["cycle_s"] == data["sections"]["plan"]["cycle_s"]

    md = (out / "device_check.md").read_text()
    assert data["command"] in md and data["environment"]["device"] in md and torch.__version__ in md
    assert "CPU code-path check" in md
    for name in FIGURES:
        assert f"| {name} |" in md
    assert not list(out.glob(".*.tmp"))  # written through temp files, none left behind


def test_a_failing_section_records_one_line_and_the_rest_run(tmp_path, monkeypatch):
    from benchmarks import device_check

    def broken(cfg, shared, device):
        raise RuntimeError("no such kernel\nsecond line of a long traceback")

    monkeypatch.setitem(device_check.SECTIONS, "gpt_state", broken)
    out = tmp_path / "o"
    device_check.main(["--allow-cpu", "--tiny", "--only", "gpt_state,matmul_peak", "--out", str(out)])
    data = json.loads((out / "device_check.json").read_text())
    assert data["sections"]["gpt_state"]["error"] == "RuntimeError: no such kernel"
    assert data["sections"]["matmul_peak"]["peak_flops"] > 0
    assert "**error**: RuntimeError: no such kernel" in (out / "device_check.md").read_text()


def test_without_cuda_it_skips_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from benchmarks import device_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "never"
    assert device_check.main(["--out", str(out)]) is None
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "skipped" in printed[0]
    assert not out.exists()


def test_the_module_command_exits_0_when_skipping(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has CUDA: the command would run the full check")
    out = tmp_path / "never"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stdout and not out.exists()
