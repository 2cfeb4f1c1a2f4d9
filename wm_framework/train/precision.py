"""Which precision a training run uses: bf16 autocast where the hardware runs it natively.

``train.precision = "auto"`` picks bf16 autocast on CUDA devices that support bf16 and
on CPUs whose instruction set has bf16 dot products (AVX512-BF16 or AMX-BF16, read from
``torch.cpu.get_capabilities()``, which PyTorch fills from the cpuinfo library), and fp32
everywhere else. The CPU test matters: without those instructions oneDNN emulates bf16
and it is far slower than fp32 (a 2048x2048 matmul ran at 0.29 GFLOP/s in bf16 against
102 in fp32 on an AVX2-only AMD EPYC; see docs/performance.md), whereas on a CPU with
AVX512-BF16 the same matmul ran 2.2x faster in bf16.

``WM_CPU_BF16=0`` in the environment makes "auto" treat the CPU as having no native bf16
(the test suite sets it, so its numbers are the same on every CI machine).

Losses that depend on batch statistics (SIGReg's characteristic function) switch
autocast off themselves, so they stay fp32 on CPU as they do on CUDA.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

log = logging.getLogger(__name__)

# cpuinfo's names for instruction sets with native bf16 dot products.
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in, and why it was chosen."""

    bf16: bool
    """True: forward passes run under ``torch.autocast(dtype=torch.bfloat16)``."""
    reason: str
    """One line for the log and run metadata, e.g. "auto: this CPU has avx512_bf16"."""

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self, device: torch.device) -> Callable[[], ContextManager]:
        """A factory of the context manager each forward pass runs in."""
        if not self.bf16:
            return nullcontext
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_bf16_features() -> list[str]:
    """The native-bf16 instruction sets this CPU reports (empty when it has none, torch cannot
    tell, or ``WM_CPU_BF16=0``)."""
    if os.environ.get("WM_CPU_BF16", "").strip() == "0":
        return []
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:  # torch older than 2.9: read the kernel's flags instead
        return _proc_cpuinfo_features()
    caps = get()
    return [f for f in CPU_BF16_FEATURES if caps.get(f, False)]


def _proc_cpuinfo_features() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in CPU_BF16_FEATURES if f in flags]


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Turn ``train.precision`` (auto | fp32 | bf16) into what runs on ``device``."""
    if requested == "fp32":
        return Precision(False, "fp32 (set in the recipe)")
    if device.type == "cuda":
        if requested == "bf16":
            return Precision(True, "bf16 (set in the recipe)")
        if torch.cuda.is_bf16_supported():
            return Precision(True, f"auto: {torch.cuda.get_device_name(device)} supports bf16")
        return Precision(False, f"auto: {torch.cuda.get_device_name(device)} has no bf16, fp32")
    if device.type != "cpu":
        return Precision(requested == "bf16", f"{requested} on {device.type}")
    native = cpu_bf16_features()
    if requested == "bf16":
        if not native:
            log.warning("train.precision = 'bf16' on a CPU without AVX512-BF16 or AMX-BF16: bf16 is emulated "
                        "there and much slower than fp32 (use 'auto' to choose per machine)")
        return Precision(True, "bf16 (set in the recipe)" + ("" if native else "; emulated on this CPU"))
    if native:
        return Precision(True, f"auto: this CPU has {', '.join(native)}")
    return Precision(False, "auto: fp32, this CPU has no native bf16 (no avx512_bf16 or amx_bf16)")
