"""Overrides given with ``wm run --resume RUN KEY=VALUE``: apply the safe ones, refuse the rest.

A resumed run continues from its ``last`` checkpoint (weights and trainer state). Some settings can change
without making the checkpoint mean something else: training longer (``train.steps``
or ``train.epochs``, never shorter than before), how often it validates, logs and
checkpoints, and the settings of the analysis stages that run after training
(``[probe]``, ``[eval]``). Anything else (the model, the data, the seed, the
optimiser) would silently mix two experiments in one run directory, so it is refused
with exit code 2, naming the keys.

Applied overrides are recorded: ``recipe.resolved.toml`` is rewritten (atomically) so
the run directory still describes what ran, and ``run.json["resumed_with"]`` lists
every resume's overrides with the values they replaced.

Extending ``train.steps`` recomputes the learning-rate schedule for the new total:
training continues from the resumed step on the cosine of the longer run.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from wm_framework.errors import WMUsageError
from wm_framework.recipe import apply_overrides, parse_overrides, validate

#: Exact keys that may change on resume.
SAFE_KEYS = ("train.steps", "train.epochs", "train.eval_every", "train.eval_batches", "train.log_every",
             "train.checkpoint_every", "train.checkpoint_epochs", "train.tensorboard")
#: Tables whose every key may change on resume (stages that only read the finished model).
SAFE_TABLES = ("probe", "eval")
#: Sub-tables whose every key may change on resume: they change what is drawn or measured, never what is trained.
SAFE_SUBTABLES = ("train.views", "train.probe_curve", "train.wandb")  # train.wandb: where metrics go, not what is trained
#: Keys that may only grow: a resumed run never trains less than it was asked to.
GROW_ONLY = ("train.steps", "train.epochs")


def is_safe(key: str) -> bool:
    """Whether ``key`` may be changed when resuming."""
    return (key in SAFE_KEYS or key.split(".", 1)[0] in SAFE_TABLES
            or any(key == t or key.startswith(t + ".") for t in SAFE_SUBTABLES))


def _get(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resume_overrides(data: dict, items: list[str]) -> tuple[dict, list[dict]]:
    """(the run's recipe dict with ``items`` applied, the change records); WMUsageError on any
    key that is not safe to change on resume, or a training length that would shrink."""
    overrides = parse_overrides(items)
    if not overrides:
        return data, []
    if data.get("sweep"):
        raise WMUsageError("--resume of a sweep takes no overrides (each run has its own recipe); resume the "
                           "sweep's runs one by one: wm run --resume RUN/sweep/LABEL KEY=VALUE")
    refused = [k for k in overrides if not is_safe(k)]
    if refused:
        raise WMUsageError(
            f"--resume: {', '.join(refused)} cannot change in a resumed run (the checkpoint was made with the old "
            f"value); start a new run instead. Allowed: {', '.join(SAFE_KEYS)}, {'.*, '.join(SAFE_TABLES + SAFE_SUBTABLES)}.*")
    for key in GROW_ONLY:
        new, old = overrides.get(key), _get(data, key)
        if new is not None and old is not None and isinstance(new, (int, float)) and new < old:
            raise WMUsageError(f"--resume: {key}={new} is less than the run's {old}; a resumed run can only train longer")
    # train.steps wins over train.epochs when a run sets both (the trainer's rule).
    if ("train.steps" in overrides and _get(data, "train.steps") is None and _get(data, "train.epochs") is not None
            and "train.epochs" not in overrides):
        raise WMUsageError("--resume: the run sets train.epochs; extend it with train.epochs=..., not train.steps")
    if "train.epochs" in overrides and _get(data, "train.steps") is not None and "train.steps" not in overrides:
        raise WMUsageError("--resume: the run sets train.steps; extend it with train.steps=..., not train.epochs")
    new_data = apply_overrides(copy.deepcopy(data), overrides)
    validate(new_data)  # a bad value is a one-line usage error before anything changes on disk
    changes = [{"key": k, "value": v, "previous": _get(data, k)} for k, v in overrides.items() if _get(data, k) != v]
    return new_data, changes


def record_resume(run_dir: Path, data: dict, changes: list[dict]) -> None:
    """Rewrite ``recipe.resolved.toml`` and append the changes to ``run.json["resumed_with"]`` (atomic writes)."""
    from wm_framework.atomic import atomic_write_json
    from wm_framework.resolved_recipe import is_complete, write_resolved

    if not changes:
        return
    # An old run's short file stays short: the defaults in force when it started are not known.
    write_resolved(run_dir, data, fill=is_complete(run_dir))
    meta_file = run_dir / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    meta.setdefault("resumed_with", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": changes})
    atomic_write_json(meta_file, meta)

