"""``recipe.resolved.toml``: every value a run uses, defaults included.

A recipe names what it changes; the rest comes from defaults that are easy to forget
(weight decay, gradient clipping, precision, a loss's knobs, an env's frame skip). The
run directory's copy writes them all out:

* the recipe's own sections through the pydantic schema (``model_dump`` of the
  validated recipe), in the recipe's key order with the defaults after its own keys;
* each stage's table (the ones in ``stages`` and ``sweep.after_stages``, and any table
  the recipe gives) through the stage's registered ``config=`` model;
* each component table (``model.encoder``, ``model.predictor``, ``model.losses.*``,
  ``data.collect*.env``, ``data.collect*.policies``, ``sweep.launcher``) with its
  factory's defaults (``component_defaults.py``). A sweep's own file leaves its
  components as written (a grid may change a component's type); each run's file under
  ``sweep/<label>/`` has them.

TOML has no null, so settings left unset are comment lines ``# key = (unset)`` in their
table, and data parameters the core sets from the store ``# key = (from the data)``.

The file is read back (``--resume``, ``load_run``, sweeps run each of their runs from
it), so filling must not change what runs: the filled recipe is validated and its
schema and stage sections must equal the recipe's own once validated, else that part is
written as given. Readers compare component tables with defaults filled in on both sides
(``same_component``), so a store built from the short form matches the long one. Old
run directories have the short file; it still loads and resumes, and a resume rewrites
it short (the defaults in force when it started are not known).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from wm_framework.errors import RecipeError, WMUsageError

FILE = "recipe.resolved.toml"
#: The first line of a complete file: how a resume tells a complete file from an old short one.
HEADER = "# recipe.resolved.toml: every value this run uses, defaults included."
_HEADER_REST = """\
# The recipe (preset and overrides applied) with every default it did not set written out: its
# sections, each stage's table, each component's factory parameters. `wm recipes explain` says
# what each field means. TOML has no null: "# key = (unset)" is a setting left without a value,
# "# key = (from the data)" a model parameter the core sets from the store (model_context.json).
"""
UNSET, FROM_DATA = "(unset)", "(from the data)"


def _ordered(given: Any, full: Any) -> Any:
    """``full``'s values in ``given``'s key order, the keys only ``full`` has after them."""
    if isinstance(given, dict) and isinstance(full, dict):
        out = {k: _ordered(given[k], full[k]) for k in given if k in full}
        out.update({k: v for k, v in full.items() if k not in out})
        return out
    if isinstance(given, list) and isinstance(full, list) and len(given) == len(full):
        return [_ordered(g, f) for g, f in zip(given, full)]
    return full


def _plain(obj: Any) -> Any:
    """Tuples as lists (TOML arrays); None kept (dropped when written, with a comment)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _stage_table(recipe, name: str, registry) -> Any:
    """What stage ``name`` runs with: its validated table, else its config model's defaults
    (None for a stage without a config model and without a table)."""
    from wm_framework.registry import resolved

    cfg = recipe.stage_config(name)
    if cfg is None and name in registry.names("stages"):
        model = resolved(registry.get("stages", name).meta.get("config"))
        cfg = model() if model is not None else None
    return cfg.model_dump() if hasattr(cfg, "model_dump") else cfg


def _stage_sections(recipe, data: dict, registry) -> dict[str, Any]:
    """Each stage table the run uses: the tables the recipe gives, and those of the stages
    it runs, through their config models (a table without a model as given)."""
    from wm_framework.recipe import CORE_SECTIONS

    used = list(recipe.stages) + list(recipe.sweep.after_stages if recipe.sweep else [])
    names = [k for k in data if k not in CORE_SECTIONS] + used
    tables = {name: _stage_table(recipe, name, registry) for name in dict.fromkeys(names)}
    return {name: _plain(t) for name, t in tables.items() if t is not None}


def _same_recipe(a, b, registry) -> bool:
    """Two validated recipes run the same: equal schema dumps, equal stage tables."""
    if a.model_dump() != b.model_dump():
        return False
    names = set(getattr(a, "_stage_configs", {})) | set(getattr(b, "_stage_configs", {}))
    return all(_stage_table(a, n, registry) == _stage_table(b, n, registry) for n in names)


COMPONENT_TABLES = (("encoders", ("model", "encoder")), ("predictors", ("model", "predictor")))


def _component_tables(data: dict):
    """(kind, path, table) of every component table a run builds, outside sweeps' parents."""
    model = data.get("model") or {}
    for kind, path in COMPONENT_TABLES:
        if isinstance(model.get(path[1]), dict):
            yield kind, path, model[path[1]]
    for name, table in (model.get("losses") or {}).items():
        yield "losses", ("model", "losses", name), table
    for sect in ("collect", "collect_test"):
        cfg = (data.get("data") or {}).get(sect)
        if not isinstance(cfg, dict):
            continue
        if isinstance(cfg.get("env"), dict):
            yield "envs", ("data", sect, "env"), cfg["env"]
        for i, pol in enumerate(cfg.get("policies") or []):
            yield "policies", ("data", sect, "policies", str(i)), pol


def _set(data: dict, path: tuple[str, ...], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value


def complete(data: dict, registry=None) -> tuple[dict, dict[tuple, list[tuple[str, str]]], list[str]]:
    """(the recipe dict with every default written out, ``{table path: [(key, UNSET |
    FROM_DATA)]}`` of the keys TOML cannot hold, notes on what could not be filled).

    Never raises for a recipe that validates: a part that cannot be filled is kept as given."""
    from wm_framework.recipe import validate

    if registry is None:
        from wm_framework.plugins import get_registry

        registry = get_registry()
    notes: list[str] = []
    try:
        recipe = validate(data, registry=registry)
    except (RecipeError, WMUsageError) as e:
        return data, {}, [f"defaults not filled: the recipe does not validate ({e})"]
    full = _plain(recipe.model_dump())
    full.update(_stage_sections(recipe, data, registry))
    out = _ordered(data, full)
    if not data.get("sweep"):  # expand_sweep reads the raw table: an empty one is no sweep, a filled one would be
        out["sweep"] = copy.deepcopy(data.get("sweep"))
    try:
        ok = _same_recipe(recipe, validate(_without_none(out), registry=registry), registry)
    except (RecipeError, WMUsageError):
        ok = False
    if not ok:  # the schema's dump does not read back as the same recipe: never write what would change a run
        out = copy.deepcopy(data)
        notes.append("schema defaults not filled: they do not read back as the same recipe")
    unset: dict[tuple, list[tuple[str, str]]] = {}
    if not (isinstance(out.get("sweep"), dict) and out["sweep"]):
        _fill_components(out, registry, unset, notes)
    elif isinstance(out["sweep"].get("launcher"), dict):
        from wm_framework.component_defaults import fill_component

        out["sweep"]["launcher"] = fill_component("launchers", out["sweep"]["launcher"], registry)
        notes.append("component defaults: in each run's own file (sweep/<label>/recipe.resolved.toml)")
    _collect_none(out, (), unset)
    return _without_none(out), unset, notes


def _fill_components(out: dict, registry, unset: dict, notes: list[str]) -> None:
    from wm_framework.component_defaults import factory_defaults, fill_component, unset_params
    from wm_framework.recipe import validate

    before = copy.deepcopy(out)
    for kind, path, table in list(_component_tables(out)):
        if factory_defaults(kind, table.get("type"), registry) is None:
            notes.append(f"{'.'.join(path)}: factory defaults not listed (its plugin could not be read)")
            continue
        _set(out, path, fill_component(kind, table, registry))
        no_value, from_data = unset_params(kind, table, registry)
        if no_value or from_data:
            unset.setdefault(path, []).extend([(k, UNSET) for k in no_value] + [(k, FROM_DATA) for k in from_data])
    try:
        validate(_without_none(out), registry=registry)
    except (RecipeError, WMUsageError) as e:  # never expected; a run must not fail over its record
        out.clear()
        out.update(before)
        unset.clear()
        notes.append(f"component defaults not filled ({e})")


def _collect_none(obj: Any, path: tuple, unset: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if v is None:
                unset.setdefault(path, []).append((k, UNSET))
            else:
                _collect_none(v, path + (k,), unset)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _collect_none(v, path + (str(i),), unset)


def _without_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_without_none(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- the text
def _key(k: str) -> str:
    """A TOML key as tomli_w writes it: bare when it can be, else a basic string."""
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _insert_comments(text: str, unset: dict[tuple, list[tuple[str, str]]]) -> str:
    """Put ``# key = (unset)`` lines at the end of their table; tables the text has no header
    for (inside arrays, or holding only sub-tables) get dotted lines at the top."""
    lines = text.splitlines()
    headers = {line: i for i, line in enumerate(lines) if line.startswith("[") and not line.startswith("[[")}
    inserts: dict[int, list[str]] = {}
    top: list[str] = []
    for path, keys in unset.items():
        where = headers.get("[" + ".".join(_key(p) for p in path) + "]") if path else -1
        if where is None or any(p.isdigit() for p in path):
            top += [f"# {'.'.join(path + (k,))} = {what}" for k, what in keys]
            continue
        end = where + 1
        while end < len(lines) and lines[end] and not lines[end].startswith("["):
            end += 1
        inserts.setdefault(end, []).extend(f"# {_key(k)} = {what}" for k, what in keys)
    out = []
    for i, line in enumerate(lines + [""]):
        out += inserts.get(i, [])
        if i < len(lines):
            out.append(line)
    return "\n".join(top + ([""] if top else []) + out).rstrip("\n") + "\n"


def resolved_text(data: dict, registry=None, fill: bool = True) -> str:
    """The text of ``recipe.resolved.toml`` for the resolved recipe dict ``data``
    (``fill=False``: the recipe as given, the short form older runs have)."""
    import tomli_w

    if not fill:
        return tomli_w.dumps(_without_none(_plain(data)))
    full, unset, notes = complete(data, registry)
    try:
        body = tomli_w.dumps(full)
    except (TypeError, ValueError) as e:  # a value TOML cannot hold (a stage model's own type): the short form
        body, unset = tomli_w.dumps(_without_none(_plain(data))), {}
        notes.append(f"defaults not filled: {e}")
    head = HEADER + "\n" + _HEADER_REST + "".join(f"# note: {n}\n" for n in notes)
    return head + "\n" + _insert_comments(body, unset)


def is_complete(run_dir: str | Path) -> bool:
    """Whether a run directory's resolved file has every default written out (not an old short one)."""
    try:
        with open(Path(run_dir) / FILE) as f:
            return f.readline().rstrip("\n") == HEADER
    except OSError:
        return False


def write_resolved(run_dir: str | Path, data: dict, fill: bool = True) -> None:
    """Write ``run_dir/recipe.resolved.toml`` atomically."""
    from wm_framework.atomic import atomic_write_text

    atomic_write_text(Path(run_dir) / FILE, resolved_text(data, fill=fill))
