"""The committed lock matches pyproject.toml and keeps CUDA wheels out (offline check)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lock_tool():
    spec = importlib.util.spec_from_file_location("wm_lock_tool", ROOT / "tools" / "lock.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lock_matches_pyproject():
    tool = _lock_tool()
    assert tool.check() == [], "refresh the lock: python tools/lock.py"


def test_lock_check_notices_an_edited_dependency(tmp_path):
    tool = _lock_tool()
    edited = tmp_path / "pyproject.toml"
    edited.write_text((ROOT / "pyproject.toml").read_text().replace('"rich>=13",', '"rich>=13",\n  "tqdm>=4",'))
    assert tool.dependency_hash(edited) != tool.dependency_hash()


def test_lock_pins_every_runtime_dependency_and_no_torch_or_cuda():
    tool = _lock_tool()
    pins = tool.locked_pins()
    for name in ("numpy", "zarr", "pydantic", "typer", "ale-py", "procgen2", "mujoco", "pytest", "scikit-learn"):
        assert name in pins, name
    assert not [n for n in pins if n.startswith(tool.FORBIDDEN_PREFIXES)]


def test_check_reports_forbidden_pins(tmp_path):
    tool = _lock_tool()
    lock = tmp_path / "lock.txt"
    lock.write_text((ROOT / "requirements" / "lock-py311.txt").read_text() + "nvidia-cublas-cu12==12.8.4.1\n")
    tool.ROOT = tmp_path  # relative names in messages
    assert any("nvidia-cublas-cu12" in p for p in tool.check(lock))
