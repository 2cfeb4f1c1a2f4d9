"""The parameters a component table leaves to its factory, read from the factory's signature.

A recipe's component table (``{type = NAME, ...params}``) names only what it changes;
the factory's signature holds the rest. Three users:

* ``recipe.resolved.toml`` writes them out (:func:`fill_component`), so a run directory
  says which env, policy, encoder, predictor and loss settings were used;
* ``wm recipes explain`` lists them with their types and docs;
* two tables of one component are compared with the defaults filled in on both sides
  (:func:`same_component`, :func:`same_env_record`): ``{type = "E"}`` and ``{type = "E",
  size = 32}`` build the same env when 32 is the default, so a store collected from one is
  reused by a recipe (or a resolved file) that says the other.

Only values a TOML file can hold are filled (numbers, strings, booleans, and lists and
tables of them; tuples become lists, as a recipe would write them). ``None`` defaults mean
"not set" and stay out (TOML has no null). Data parameters (``obs_shape``, ``history``,
...) are never filled: the core injects them from the store only when the table does
not set them, so writing a factory's placeholder default would change the model.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

#: Keys of a component table that belong to the recipe, not the factory, with their defaults.
TABLE_DEFAULTS: dict[str, dict[str, Any]] = {"losses": {"weight": 1.0}}
#: Keys of a component table that are not factory parameters (``name`` labels a policy's episodes).
NOT_PARAMS = ("type", "name", "weight")

_UNREPRESENTABLE = object()


def toml_value(value: Any) -> Any:
    """``value`` as a TOML file would hold it (tuples as lists), or ``_UNREPRESENTABLE``."""
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if not math.isnan(value) else _UNREPRESENTABLE  # nan != nan: would never compare equal
    if isinstance(value, (list, tuple)):
        items = [toml_value(v) for v in value]
        return _UNREPRESENTABLE if any(v is _UNREPRESENTABLE for v in items) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return _UNREPRESENTABLE
        items = {k: toml_value(v) for k, v in value.items()}
        return _UNREPRESENTABLE if any(v is _UNREPRESENTABLE for v in items.values()) else items
    return _UNREPRESENTABLE


def representable(value: Any) -> bool:
    return toml_value(value) is not _UNREPRESENTABLE


def data_param_names(kind: str) -> tuple[str, ...]:
    """The data parameters the core passes to a factory of ``kind`` when its table omits them."""
    if kind not in ("encoders", "predictors"):
        return ()
    from wm_framework.runs.model_building import CONTEXT_KEYS_ENCODER, CONTEXT_KEYS_PREDICTOR

    return CONTEXT_KEYS_ENCODER if kind == "encoders" else CONTEXT_KEYS_PREDICTOR


def signature_params(factory, kind: str) -> list[inspect.Parameter]:
    """The keyword parameters of ``factory`` (a policy's positional ``env`` and ``*args``/``**kw`` left out).
    Reading the signature imports a lazy factory's module; errors propagate."""
    params = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or (kind == "policies" and p.name == "env"):
            continue
        params.append(p)
    return params


def _component(kind: str, name: Any, registry):
    if not isinstance(name, str):
        return None
    if registry is None:
        from wm_framework.plugins import get_registry

        registry = get_registry()
    from wm_framework.errors import WMUsageError

    try:
        return registry.get(kind, name)
    except WMUsageError:
        return None


def factory_defaults(kind: str, name: str, registry=None) -> dict[str, Any] | None:
    """``{param: default}`` of component ``name``'s factory, as TOML holds them: no data
    parameter, no required parameter, no ``None``; None when the factory cannot be read
    (unknown name, a plugin that fails to import)."""
    comp = _component(kind, name, registry)
    if comp is None:
        return None
    try:
        params = signature_params(comp.factory, kind)
    except Exception:  # noqa: BLE001 - an unavailable plugin: its tables are compared as written
        return None
    skip = set(data_param_names(kind))
    out = dict(TABLE_DEFAULTS.get(kind, {}))
    for p in params:
        if p.name in skip or p.name in NOT_PARAMS or p.default is p.empty or p.default is None:
            continue
        value = toml_value(p.default)
        if value is not _UNREPRESENTABLE:
            out[p.name] = value
    return out


def fill_component(kind: str, table: Any, registry=None) -> dict | Any:
    """``table`` with every default it does not set added after its own keys (unchanged when
    it is not a ``{type = NAME}`` table or its factory cannot be read)."""
    if not isinstance(table, dict):
        return table
    defaults = factory_defaults(kind, table.get("type"), registry)
    if not defaults:
        return table
    return {**table, **{k: v for k, v in defaults.items() if k not in table}}


def unset_params(kind: str, table: Any, registry=None) -> tuple[list[str], list[str]]:
    """(parameters left unset: a ``None`` default the table does not change, data parameters
    the core sets from the store) of the factory of ``table``; empty when it cannot be read."""
    comp = _component(kind, table.get("type") if isinstance(table, dict) else None, registry)
    if comp is None:
        return [], []
    try:
        params = signature_params(comp.factory, kind)
    except Exception:  # noqa: BLE001 - see factory_defaults
        return [], []
    data = set(data_param_names(kind))
    unset = [p.name for p in params if p.name not in table and p.name not in data and p.default is None]
    from_data = [p.name for p in params if p.name not in table and p.name in data]
    return unset, from_data


def _jsonish(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonish(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonish(v) for v in x]
    return x


def same_component(kind: str, a: dict, b: dict, registry=None) -> bool:
    """Whether two tables of one component build the same thing: equal as written, or equal
    once each has its factory's defaults (the factory is read only when they differ)."""
    a, b = _jsonish(dict(a)), _jsonish(dict(b))
    if a == b:
        return True
    if a.get("type") != b.get("type"):
        return False
    return _jsonish(fill_component(kind, a, registry)) == _jsonish(fill_component(kind, b, registry))


def canonical_params(kind: str, name: str, params: dict, registry=None) -> dict:
    """``params`` of component ``name`` with its factory's defaults filled in (as written
    when the factory cannot be read); for messages that name the first differing key."""
    table = fill_component(kind, {"type": name, **params}, registry)
    return _jsonish({k: v for k, v in table.items() if k != "type"})


def same_env_record(a: Any, b: Any, registry=None) -> bool:
    """Whether two store ``env`` records (``{"name": NAME, "params": {...}}``) name the same env."""
    if _jsonish(a) == _jsonish(b):
        return True
    if not (isinstance(a, dict) and isinstance(b, dict)) or a.get("name") != b.get("name"):
        return False
    name = a.get("name")
    return (canonical_params("envs", name, dict(a.get("params") or {}), registry)
            == canonical_params("envs", name, dict(b.get("params") or {}), registry))
