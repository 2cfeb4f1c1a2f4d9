"""A stage's results (the nested dict it records in results.json) as tracker scalars and tables.

Stages record free-form nested dicts: eval keys metrics by model and horizon, probes by
task, probe and checkpoint, a sweep by run label. Trackers want flat things, so this
module reads any such dict without knowing which stage wrote it:

* :func:`numeric_leaves`: every finite number reached through dicts, named by its path
  (``metrics/model/1/mse``): the scalars (W&B summary, TensorBoard scalars). Lists are
  left out (curves and intervals would make hundreds of scalars); the tables keep them.
* :func:`result_tables`: ``values``, a (name, value) table of every leaf, plus one table
  per "records" node: a dict with two or more flat dicts among its values (one row per
  such key: horizons, checkpoints, sweep runs; ``rows`` when it is the result itself) or
  a list of dicts (one row per item).

Caps keep a pathological result from flooding a tracker; results.json stays the record.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_SCALARS = 1000  # per results key
MAX_TABLES = 50  # per results key, the (name, value) table included
MAX_ROWS = 10_000
MAX_CELL = 2000  # characters of a list or dict shown in one cell


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}/{key}" if prefix else str(key)


def _number(v: Any) -> float | None:
    """A finite int or float (bools are flags, not measurements)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def numeric_leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """``{path: number}`` for every finite number reached through dicts (at most MAX_SCALARS)."""
    out: dict[str, float] = {}

    def walk(v: Any, path: str) -> None:
        if len(out) >= MAX_SCALARS:
            return
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(sub, _join(path, k))
        elif (x := _number(v)) is not None and path:
            out[path] = x

    walk(value, prefix)
    return out


def cell(v: Any) -> Any:
    """One table cell: numbers, strings, bools and None as they are, anything else as JSON text."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    text = json.dumps(v, default=str)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def _is_record_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def flatten(value: Any, prefix: str = "", records: bool = True) -> dict[str, Any]:
    """Every leaf reached through dicts, named by its path; lists are leaves (shown as JSON),
    except lists of dicts when ``records`` is false (they are tables of their own)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, _join(prefix, k), records))
    elif records or not _is_record_list(value):
        out[prefix] = cell(value)
    return out


def _is_flat_dict(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and not any(isinstance(x, dict) for x in v.values())


def _rows_table(keys: list[str] | None, items: list[dict]) -> tuple[list[str], list[list]]:
    """Columns are the union of the items' flattened keys, in first-seen order."""
    flat = [flatten(item) for item in items[:MAX_ROWS]]
    columns: list[str] = []
    for f in flat:
        columns += [c for c in f if c not in columns]
    rows = [[f.get(c) for c in columns] for f in flat]
    if keys is not None:
        columns, rows = ["key", *columns], [[k, *r] for k, r in zip(keys, rows)]
    return columns, rows


def _records(v: dict) -> dict | None:
    """The flat dicts among a dict's values when they make a table (two or more, and no
    value nested deeper), else None."""
    dicts = {k: x for k, x in v.items() if isinstance(x, dict)}
    return dicts if len(dicts) >= 2 and all(_is_flat_dict(x) for x in dicts.values()) else None


def result_tables(value: Any) -> dict[str, tuple[list[str], list[list]]]:
    """``{name: (columns, rows)}``: ``values`` holds every leaf as (name, value); every records
    node below (see the module docstring) is a table of its own, named by its path."""
    leaves = {k: v for k, v in flatten(value, records=False).items() if k}
    tables = {"values": (["name", "value"], [[k, v] for k, v in list(leaves.items())[:MAX_ROWS]])} if leaves else {}

    def walk(v: Any, path: str) -> None:
        if len(tables) >= MAX_TABLES:
            return
        if isinstance(v, list):
            if _is_record_list(v):
                tables[path or "rows"] = _rows_table(None, v)
            return
        if not isinstance(v, dict):
            return
        if (records := _records(v)) is not None:
            tables[path or "rows"] = _rows_table([str(k) for k in records], list(records.values()))
            return
        for k, sub in v.items():
            walk(sub, _join(path, k))

    walk(value, "")
    return tables
