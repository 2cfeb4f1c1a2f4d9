"""``wm recipes explain NAME|PATH [SECTION]``: every field a recipe can set, with its meaning.

Each section of the recipe (``data``, ``data.collect``, ``train``, ``train.views``, ...,
each stage's table, each component table) is listed field by field: its type, its
default, the value the recipe sets (if it does) and its description. The descriptions
come from where the fields are defined, so they never drift from the code: the pydantic
models' ``Field(description=...)`` (the schema in ``recipe.py``, each stage's ``config=``
model), and for a component table the factory's signature with the parameter docs of its
docstring (Google ``Args:``, NumPy ``Parameters`` or Sphinx ``:param x:`` style). Data
parameters (``obs_shape``, ``history``, ...) are marked: the core sets them from the store.
Rendering (Rich tables, plain text, JSON) is in ``recipe_explain_view.py``.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

#: What a field's default is when it has no value.
REQUIRED, UNSET, FROM_DATA = "required", "(unset)", "(from the data)"
_MISSING = object()


@dataclass
class Row:
    """One field: name, type, default, the recipe's value (``set``) and description."""

    name: str
    type: str
    default: Any
    value: Any = None
    set: bool = False
    description: str = ""
    see: str = ""  # the section that lists this table's own fields


@dataclass
class Section:
    """One table of a recipe: dotted name, what it is, its fields."""

    name: str
    doc: str
    rows: list[Row] = field(default_factory=list)
    used: bool = True  # False: a stage table the recipe does not run (listed only when asked for)


# ----------------------------------------------------------------------------- types and docs
def type_text(ann: Any) -> str:
    """A pydantic / typing annotation as a recipe writer reads it (`int | None`, `"a" | "b"`, `table`)."""
    if isinstance(ann, str):
        return ann
    if ann is None or ann is type(None):
        return "None"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a) for a in args))
    if origin is typing.Literal:
        return " | ".join(fmt_value(a) for a in args)
    if origin in (list, tuple, set):
        inner = [type_text(a) for a in args if a is not Ellipsis]
        if origin is tuple and inner:
            return "[" + ", ".join(inner) + "]"
        return f"list[{inner[0]}]" if inner else "list"
    if origin is dict or ann is dict:
        return "table"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "table"
    if ann is typing.Any:
        return "any"
    return getattr(ann, "__name__", str(ann))


def _models_in(ann: Any) -> list[tuple[type[BaseModel], bool]]:
    """The pydantic models an annotation holds: (model, as list items)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [(ann, False)]
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a)]
    if origin in (list, tuple):
        return [(m, True) for a in args for m, _ in _models_in(a)]
    return []


_SECTION_HEAD = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):?\s*$")


_NEXT_HEAD = re.compile(r"^\s*[A-Z][\w ]*:\s*$")


def param_docs(doc: str | None) -> dict[str, str]:
    """``{parameter: description}`` from a docstring's Google ``Args:``, NumPy ``Parameters``
    (underlined) or Sphinx ``:param name:`` entries."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    for m in re.finditer(r":param\s+(?:[\w\[\], |]+\s+)?(\w+):\s*(.*?)(?=\n\s*:|\Z)", "\n".join(lines), re.S):
        out[m.group(1)] = " ".join(m.group(2).split())
    i = 0
    while i < len(lines):
        head = _SECTION_HEAD.match(lines[i])
        if not head:
            i += 1
            continue
        base = len(head.group(1))
        numpy = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        i += 2 if numpy else 1
        name, indent = None, None
        while i < len(lines):
            line = lines[i]
            depth = len(line) - len(line.lstrip())
            if line.strip() and (depth < base or (depth == base and not numpy and (
                    _NEXT_HEAD.match(line) or (indent is not None and indent > base)))):
                break  # the next section of the docstring ("Args:" on a docstring's first line has entries at its depth)
            if numpy and line.strip() and depth == base and _SECTION_HEAD.match(line) is None:
                if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
                    break
                m = re.match(r"^\s*(\*{0,2}\w+)\s*(?::.*)?$", line)
                name, indent = (m.group(1).lstrip("*"), depth) if m else (None, None)
                if name:
                    out[name] = ""
            elif not numpy and line.strip() and (indent is None or depth <= indent):
                m = re.match(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
                if m:
                    name, indent = m.group(1), depth
                    out[name] = m.group(2).strip()
            elif name and line.strip():
                out[name] = (out[name] + " " + line.strip()).strip()
            i += 1
    return out


def factory_param_docs(factory) -> dict[str, str]:
    """Parameter docs of a registered factory: its docstring, a class's ``__init__`` docstring,
    and the field descriptions of a pydantic model or dataclass (the factory itself, or its
    ``config`` attribute)."""
    import dataclasses

    from wm_framework.registry import LazyFactory

    obj = factory.resolve() if isinstance(factory, LazyFactory) else factory
    docs = param_docs(getattr(obj, "__doc__", None))
    if inspect.isclass(obj):
        for k, v in param_docs(obj.__init__.__doc__).items():
            docs.setdefault(k, v)
    for model in (obj, getattr(obj, "config", None)):
        if isinstance(model, type) and issubclass(model, BaseModel):
            for k, f in model.model_fields.items():
                if f.description:
                    docs.setdefault(k, " ".join(f.description.split()))
        elif model is not None and dataclasses.is_dataclass(model):
            for f in dataclasses.fields(model):
                text = f.metadata.get("help") or f.metadata.get("description") or f.metadata.get("doc")
                if text:
                    docs.setdefault(f.name, str(text))
    return docs


def fmt_value(v: Any) -> str:
    """A value as a recipe writes it (TOML inline)."""
    if v is None:
        return UNSET
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        import json

        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {fmt_value(x)}" for k, x in v.items()) + "}" if v else "{}"
    if isinstance(v, BaseModel):
        return fmt_value(v.model_dump())
    return str(v)


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(text.split())


# ----------------------------------------------------------------------------- sections
def _get(data: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def model_sections(model: type[BaseModel], name: str, given: Any, doc: str | None = None) -> list[Section]:
    """The section of pydantic ``model`` (its rows with the values ``given`` sets) and one
    section per model nested in it, depth first."""
    absent = not isinstance(given, dict)
    given = given if isinstance(given, dict) else {}
    sect = Section(name, doc if doc is not None else _first_paragraph(model.__doc__))
    if absent and name != "recipe":
        sect.doc += " (not set by this recipe: the defaults)"
    nested: list[Section] = []
    for fname, f in model.model_fields.items():
        if f.is_required():
            default: Any = REQUIRED
        elif f.default_factory is not None:
            default = f.default_factory()
        else:
            default = f.default
        value = given.get(fname, _MISSING)
        sect.rows.append(Row(fname, type_text(f.annotation), default, None if value is _MISSING else value,
                             value is not _MISSING, " ".join((f.description or "").split())))
        for sub, items in _models_in(f.annotation):
            child = f"{name}.{fname}" if name != "recipe" else fname
            sect.rows[-1].see = child
            if items:
                first = value[0] if isinstance(value, list) and value else {}
                nested += model_sections(sub, child, first, _first_paragraph(sub.__doc__) + " (each item)")
            else:
                nested += model_sections(sub, child, value)
    return [sect, *nested]


def component_section(kind: str, name: str, table: Any, registry) -> Section:
    """A component table: the factory's parameters with defaults, the table's values and the docstring's docs."""
    from wm_framework.component_defaults import NOT_PARAMS, TABLE_DEFAULTS, data_param_names, signature_params
    from wm_framework.registry import singular

    table = table if isinstance(table, dict) else {}
    ctype = table.get("type")
    sect = Section(name, f"{ctype}")
    sect.rows.append(Row("type", "str", REQUIRED, ctype, True, f"the registered {singular(kind)} "
                         f"(`wm components list --kind {kind}`)"))
    try:
        comp = registry.get(kind, ctype)
        params = signature_params(comp.factory, kind)
        docs = factory_param_docs(comp.factory)
        sect.doc = f"{ctype} (plugin {comp.plugin}): {comp.summary}"
    except Exception as e:  # noqa: BLE001 - shown as the section's note; the rest of the recipe still explains
        sect.doc = f"{ctype}: its factory could not be read ({type(e).__name__}: {e})"
        return sect
    data = set(data_param_names(kind))
    for key, default in TABLE_DEFAULTS.get(kind, {}).items():
        sect.rows.append(Row(key, type(default).__name__, default, table.get(key), key in table,
                             "weight of this term in the summed loss" if key == "weight" else ""))
    if kind == "policies":
        sect.rows.append(Row("name", "str", ctype, table.get("name"), "name" in table,
                             "label of this policy's episodes in the store (default: its type)"))
    for p in params:
        if p.name in NOT_PARAMS:
            continue
        ann = p.annotation
        typ = ann if isinstance(ann, str) else ("" if ann is p.empty else type_text(ann))
        if not typ and p.default is not p.empty and p.default is not None:
            typ = type(p.default).__name__
        desc = docs.get(p.name, "")
        if p.name in data:
            default = FROM_DATA
            desc = ("data parameter, set from the store unless given. " + desc).strip()
        else:
            default = REQUIRED if p.default is p.empty else p.default
        sect.rows.append(Row(p.name, typ, default, table.get(p.name), p.name in table, desc))
    if comp.accepts_any():
        sect.doc += " (accepts further keyword parameters)"
    return sect


def _component_tables(data: dict):
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    for key, kind in (("encoder", "encoders"), ("predictor", "predictors")):
        if key in model:
            yield kind, f"model.{key}", model[key]
    for lname, table in (model.get("losses") or {}).items():
        yield "losses", f"model.losses.{lname}", table
    for sect in ("collect", "collect_test"):
        cfg = (data.get("data") or {}).get(sect)
        if isinstance(cfg, dict):
            if "env" in cfg:
                yield "envs", f"data.{sect}.env", cfg["env"]
            for i, pol in enumerate(cfg.get("policies") or []):
                yield "policies", f"data.{sect}.policies.{i}", pol
    sweep = data.get("sweep")
    if isinstance(sweep, dict):
        yield "launchers", "sweep.launcher", sweep.get("launcher") or {"type": "local"}


def sections(data: dict, registry=None, unused_stages: bool = False) -> list[Section]:
    """Every section of the resolved recipe dict ``data`` (validated first: RecipeError);
    ``unused_stages`` adds the tables of registered stages the recipe does not run."""
    from wm_framework.recipe import Recipe, validate
    from wm_framework.registry import resolved

    if registry is None:
        from wm_framework.plugins import get_registry

        registry = get_registry()
    recipe = validate(data, registry=registry)
    out = model_sections(Recipe, "recipe", data)
    out[0].doc = "top-level keys. " + out[0].doc
    names = {s.name for s in out}
    inserts: dict[str, list[Section]] = {}
    for kind, path, table in _component_tables(data):
        parent = path.rsplit(".", 1)[0]
        while "." in parent and parent not in names:  # model.losses.pred -> model
            parent = parent.rsplit(".", 1)[0]
        inserts.setdefault(parent, []).append(component_section(kind, path, table, registry))
    for parent, comps in inserts.items():  # the holding row points at the component's own section
        for s in out:
            for r in s.rows if s.name == parent else []:
                path = r.name if parent == "recipe" else f"{parent}.{r.name}"
                below = [c.name for c in comps if c.name == path or c.name.startswith(path + ".")]
                if below:
                    r.see = below[0] if below == [path] else path + ".*"
    merged: list[Section] = []
    for s in out:  # each component table right after the section that holds it
        merged.append(s)
        merged += inserts.pop(s.name, [])
    for rest in inserts.values():
        merged += rest
    used = list(recipe.stages) + list(recipe.sweep.after_stages if recipe.sweep else [])
    for stage in registry.names("stages"):
        config = resolved(registry.get("stages", stage).meta.get("config"))
        in_use = stage in used or stage in data
        if config is None or not (in_use or unused_stages):
            continue
        for s in model_sections(config, stage, data.get(stage)):
            s.used = in_use
            merged.append(s)
    return merged


def select(all_sections: list[Section], wanted: str | None) -> list[Section]:
    """The sections named ``wanted`` or below it (``train`` -> train, train.views, ...); all used
    ones without ``wanted``; WMUsageError with a did-you-mean for an unknown name."""
    if not wanted:
        return [s for s in all_sections if s.used]
    hit = [s for s in all_sections if s.name == wanted or s.name.startswith(wanted + ".")]
    if hit:
        return hit
    import difflib

    from wm_framework.errors import WMUsageError

    names = list(dict.fromkeys(s.name for s in all_sections))
    close = difflib.get_close_matches(wanted, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    tops = ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
    raise WMUsageError(f"section '{wanted}': this recipe has no such section{hint}; sections: {tops}")
