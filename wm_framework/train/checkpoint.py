"""Atomic checkpoints, loaded with ``weights_only=True``.

A checkpoint is written to a temporary file in the same directory, fsynced, then
renamed over the target, so a crash leaves either the old file or the new one, never
half of one. Loading never unpickles arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path

import torch

# The writers live in wm_framework.atomic (no torch); re-exported for existing callers.
from wm_framework.atomic import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401
from wm_framework.errors import WMUsageError


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save ``state`` atomically (temp file + fsync + rename)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; anything else (a pickle payload) is refused."""
    path = Path(path)
    if not path.is_file():
        raise WMUsageError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError on truncation, ...
        raise WMUsageError(f"{path}: not a loadable checkpoint (weights_only): {_load_error_line(e)}") from e


def _load_error_line(e: Exception) -> str:
    """One plain line for a failed weights_only load. torch's own first line invites the
    user to load the file unsafely; the useful part is the WeightsUnpickler line naming
    the refused global (the would-be code)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    # torch < 2.13: "Unsupported global: GLOBAL os.system was not an allowed global";
    # torch 2.13 for blocked modules: "unsupported GLOBAL posix.system whose module posix is blocked".
    found = (re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"unsupported GLOBAL (\S+)", text)
             or re.search(r"WeightsUnpickler error: ([^\n.]*)", text))
    if found:
        return f"refused to unpickle non-tensor data ({found.group(1).strip()}); only tensors and plain containers load"
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[0] if lines else type(e).__name__


def save_weights_safetensors(path: str | Path, state_dict: dict) -> None:
    """Write model weights as safetensors (a format that cannot carry code), atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))


def load_weights_safetensors(path: str | Path) -> dict:
    """Read a safetensors weights file; a malformed one is a one-line WMUsageError."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise WMUsageError(f"{path}: weights file not found")
    try:
        return load(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - SafetensorError on a truncated or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WMUsageError(f"{path}: not a safetensors weights file: {first}") from e


def load_model_weights(path: str | Path) -> dict:
    """A model state dict from a .safetensors file or from a checkpoint's "model" entry."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_weights_safetensors(path)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise WMUsageError(f"{path}: checkpoint has no 'model' state dict")
    return state["model"]


def load_state_dict_strict(module: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict with an error naming the mismatched keys instead of a wall of text."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if shape:
            parts.append(f"shape mismatch {_few(shape)}")
        raise WMUsageError(f"{source}: checkpoint does not fit this model: {'; '.join(parts)}")
    module.load_state_dict(state)


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
