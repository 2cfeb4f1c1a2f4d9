"""Checkpoints: model weights as safetensors, trainer state apart, both written atomically.

A run's ``checkpoints/`` holds ``<label>.safetensors`` (the model's weights, for every
label: ``last``, ``best``, ``epoch_<n>``) and one ``last.trainer.pt`` (optimizer,
scheduler, step, best validation loss: what ``--resume`` needs and nothing else reads).
The weights format cannot carry code; the trainer state loads with ``weights_only=True``.

Every file is written to a temporary file in the same directory, fsynced, then renamed
over the target, so a crash leaves the old file or the new one, never half of one. The
``last`` pair must also agree with itself: both are first written as ``.pending`` files,
then renamed, trainer state first; :func:`recover_pending` finishes or discards an
interrupted pair, so a kill at any instant leaves a pair from one step.
Runs written before safetensors (one ``<label>.pt`` with model and optimizer) still load.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# The writers live in wm_framework.atomic (no torch); re-exported for existing callers.
from wm_framework.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401
from wm_framework.errors import WMUsageError


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


def weights_bytes(state_dict: dict, metadata: dict | None = None) -> bytes:
    """A model state dict serialised as safetensors; ``metadata`` values become strings."""
    from safetensors.torch import save

    tensors, seen = {}, set()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise WMUsageError(f"state dict entry '{k}' is a {type(v).__name__}, not a tensor; safetensors holds tensors only")
        t = v.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (tied weights): each gets its own copy,
        # and load_state_dict ties them again by copying into the shared parameter.
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if key in seen:
            t = t.clone()
        elif key is not None:
            seen.add(key)
        tensors[k] = t
    meta = {"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
    return save(tensors, metadata=meta)


def save_weights_safetensors(path: str | Path, state_dict: dict, metadata: dict | None = None) -> int:
    """Write model weights as safetensors (a format that cannot carry code), atomically; returns the size in bytes."""
    data = weights_bytes(state_dict, metadata)
    atomic_write_bytes(path, data)
    return len(data)


def weights_metadata(path: str | Path) -> dict:
    """The string metadata of a safetensors file, read from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise WMUsageError(f"{path}: not a safetensors weights file: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e


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


# -- a training run's checkpoints ------------------------------------------------------
TRAINER_STATE = "last.trainer.pt"  # optimizer, scheduler, counters: only resume reads it
_PENDING = ".pending"


def weights_file(label: str) -> str:
    return f"{label}.safetensors"


def save_training_checkpoint(ckpt_dir: Path, label: str, model_state: dict, trainer_state: dict | None) -> dict:
    """Write ``<label>.safetensors`` (and, with ``trainer_state``, ``last.trainer.pt``) so
    that a kill at any instant leaves a consistent pair; returns the sizes in bytes.

    The pair is first written in full as ``.pending`` files, then renamed trainer state
    first: once the weights' pending file is gone the pair is complete, and while it is
    there :func:`recover_pending` knows how far the commit got.
    """
    ckpt_dir = Path(ckpt_dir)
    step = trainer_state.get("step") if trainer_state else None
    weights = weights_bytes(model_state, {"label": label} | ({"step": step} if step is not None else {}))
    if trainer_state is None:
        atomic_write_bytes(ckpt_dir / weights_file(label), weights)
        return {"weights_bytes": len(weights)}
    import io

    buf = io.BytesIO()
    torch.save(trainer_state, buf)
    trainer_final, weights_final = ckpt_dir / TRAINER_STATE, ckpt_dir / weights_file(label)
    trainer_pending, weights_pending = _pending(trainer_final), _pending(weights_final)
    try:
        atomic_write_bytes(trainer_pending, buf.getvalue())
        atomic_write_bytes(weights_pending, weights)
    except BaseException as e:  # nothing committed: the previous pair stands, no pending file is left
        for f in (weights_pending, trainer_pending):
            f.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (str(trainer_pending), str(weights_pending)):
            final = trainer_final if e.filename == str(trainer_pending) else weights_final
            raise OSError(e.errno, e.strerror, str(final)) from e  # the file the user knows
        raise
    os.replace(trainer_pending, trainer_final)
    os.replace(weights_pending, weights_final)
    return {"weights_bytes": len(weights), "trainer_state_bytes": buf.getbuffer().nbytes}


def recover_pending(ckpt_dir: Path) -> None:
    """Finish or discard a ``last`` pair whose commit a kill interrupted (see above)."""
    ckpt_dir = Path(ckpt_dir)
    trainer_pending, weights_pending = _pending(ckpt_dir / TRAINER_STATE), _pending(ckpt_dir / weights_file("last"))
    if weights_pending.is_file():  # both pending files were complete: the commit had begun
        if trainer_pending.is_file():
            os.replace(trainer_pending, ckpt_dir / TRAINER_STATE)
        os.replace(weights_pending, ckpt_dir / weights_file("last"))
    elif trainer_pending.is_file():  # killed before the weights were written: the old pair stands
        trainer_pending.unlink()


def load_resume_state(ckpt_dir: Path) -> tuple[dict, dict, str] | None:
    """(model weights, trainer state, source) of the ``last`` checkpoint, or None if there is none.

    Reads the safetensors + trainer-state pair, or a run written before it (``last.pt``).
    """
    ckpt_dir = Path(ckpt_dir)
    recover_pending(ckpt_dir)
    trainer, weights = ckpt_dir / TRAINER_STATE, ckpt_dir / weights_file("last")
    if trainer.is_file() and weights.is_file():
        state = load_checkpoint(trainer)
        meta_step = weights_metadata(weights).get("step")
        if meta_step is not None and str(state.get("step")) != meta_step:
            raise WMUsageError(f"{ckpt_dir}: {weights.name} is from step {meta_step} but {trainer.name} from step "
                               f"{state.get('step')}; the pair was not written by this trainer")
        return load_weights_safetensors(weights), state, str(weights)
    old = ckpt_dir / "last.pt"
    if old.is_file():
        state = load_checkpoint(old)
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise WMUsageError(f"{old}: checkpoint has no 'model' state dict")
        return state.pop("model"), state, str(old)
    return None


def _pending(path: Path) -> Path:
    return path.with_name(f".{path.name}{_PENDING}")
