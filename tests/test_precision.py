"""train.precision: "auto" picks bf16 autocast only where the device runs bf16 natively."""

from __future__ import annotations

import logging

import pytest
import torch

from wm_framework.train import precision as P

CPU = torch.device("cpu")


@pytest.fixture
def cpu_caps(monkeypatch):
    """Pretend the CPU reports the given capability flags."""
    monkeypatch.delenv("WM_CPU_BF16", raising=False)

    def set_caps(**flags):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", **flags})

    return set_caps


@pytest.mark.parametrize("flags, expected", [
    ({"avx512_bf16": True}, True),
    ({"amx_bf16": True, "avx512_bf16": False}, True),
    ({"avx2": True, "avx512_f": True}, False),  # AVX-512 without its bf16 extension: emulated
    ({}, False),
])
def test_auto_on_cpu_follows_native_bf16(cpu_caps, flags, expected):
    cpu_caps(**flags)
    chosen = P.resolve_precision("auto", CPU)
    assert chosen.bf16 is expected
    assert chosen.name == ("bf16" if expected else "fp32")
    assert chosen.reason.startswith("auto")


def test_explicit_settings_win(cpu_caps):
    cpu_caps(avx512_bf16=True)
    assert P.resolve_precision("fp32", CPU).bf16 is False
    cpu_caps()
    assert P.resolve_precision("bf16", CPU).bf16 is True


def test_forced_bf16_on_a_cpu_without_it_warns(cpu_caps, caplog):
    cpu_caps(avx2=True)
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        chosen = P.resolve_precision("bf16", CPU)
    assert chosen.bf16 and "emulated" in chosen.reason
    assert any("much slower than fp32" in r.getMessage() for r in caplog.records)


def test_env_override_turns_native_bf16_off(cpu_caps, monkeypatch):
    cpu_caps(avx512_bf16=True)
    monkeypatch.setenv("WM_CPU_BF16", "0")
    assert P.cpu_bf16_features() == []
    assert P.resolve_precision("auto", CPU).bf16 is False


def test_proc_cpuinfo_fallback(tmp_path, monkeypatch):
    """torch without get_capabilities: the kernel's flag line is read instead."""
    monkeypatch.delenv("WM_CPU_BF16", raising=False)
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    real_open = open
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(fake if f == "/proc/cpuinfo" else f, *a, **k))
    assert P.cpu_bf16_features() == ["avx512_bf16"]


def test_autocast_factory_runs_matmuls_in_bf16(cpu_caps):
    cpu_caps(avx512_bf16=True)
    ctx = P.resolve_precision("auto", CPU).autocast(CPU)
    with ctx():
        y = torch.ones(2, 3) @ torch.ones(3, 2)
    assert y.dtype == torch.bfloat16
    with P.resolve_precision("fp32", CPU).autocast(CPU)():
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


def test_sigreg_stays_fp32_inside_cpu_bf16_autocast():
    """The batch-statistic loss switches autocast off itself: same value as without autocast."""
    from wm_framework import create

    sigreg = create("losses", "sigreg", num_directions=64)
    z = torch.randn(32, 3, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    plain = sigreg({"z": z})
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sigreg({"z": z})
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)
