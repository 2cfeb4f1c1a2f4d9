"""Shared fixtures. Tests run on CPU, single-threaded torch (CI has 2 cores), deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `import benchmarks` from the checkout
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# train.precision="auto" picks bf16 on CPUs with AVX512-BF16/AMX: keep fp32 so the suite's
# numbers do not depend on which CI machine runs it (tests/test_precision.py covers bf16).
os.environ["WM_CPU_BF16"] = "0"


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees freshly loaded plugins (tests may install or break some)."""
    from wm_framework.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()


def run_wm(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `wm` console entry point in a subprocess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "wm_framework.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def wm():
    return run_wm
