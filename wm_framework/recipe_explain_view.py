"""How ``wm recipes explain`` prints: Rich tables on a terminal, plain text when piped, JSON.

Plain text is one line per field, greppable (``wm recipes explain R train | grep clip``):

    [train] The one training loop's settings.
      grad_clip: float | None = 1.0  (default)
          Clip the global gradient norm to this (none: no clipping).
      lr: float = 5e-05  (recipe; default 0.0003)
          Peak learning rate (AdamW).
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

from wm_framework.recipe_explain import REQUIRED, Row, Section, fmt_value, sections, select


def _shown(v: Any) -> str:
    return v if v in (REQUIRED,) or (isinstance(v, str) and v.startswith("(")) else fmt_value(v)


def _origin(row: Row) -> str:
    if row.see and row.default not in (None, REQUIRED):
        return "recipe" if row.set else "default"  # its own section lists the defaults
    if row.set:
        return "recipe; required" if row.default == REQUIRED else f"recipe; default {_shown(row.default)}"
    return "required" if row.default == REQUIRED else "default"


def _value(row: Row) -> str:
    """What a row holds: a table with its own section points there instead of spelling it out."""
    if row.see and (row.set or row.default not in (None, REQUIRED)):
        return f"see [{row.see}]"
    return fmt_value(row.value) if row.set else _shown(row.default)


def plain(chosen: list[Section], width: int = 100) -> str:
    out = []
    for s in chosen:
        out.append(f"[{s.name}] {s.doc}".rstrip())
        for r in s.rows:
            if not r.set and r.default == REQUIRED:
                out.append(f"  {r.name}: {r.type or '?'}  (required)")
            else:
                out.append(f"  {r.name}: {r.type or '?'} = {_value(r)}  ({_origin(r)})")
            if r.description:
                out += textwrap.wrap(r.description, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def rich_tables(chosen: list[Section]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for s in chosen:
        table = Table(title=f"[bold]{escape(s.name)}[/]  {escape(s.doc)}", title_justify="left", expand=True)
        table.add_column("field", no_wrap=True)
        table.add_column("type", overflow="fold")
        table.add_column("value", overflow="fold")
        table.add_column("default", overflow="fold")
        table.add_column("description", overflow="fold", ratio=3)
        for r in s.rows:
            value = f"[bold green]{escape(_value(r))}[/]" if r.set else f"[dim]{escape(_value(r))}[/]"
            default = f"see [{r.see}]" if r.see and r.default not in (None, REQUIRED) else _shown(r.default)
            table.add_row(escape(r.name), escape(r.type), value, escape(default), escape(r.description))
        console.print(table)


def _jsonable(v: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    try:
        json.dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError):
        return repr(v)


def as_json(chosen: list[Section]) -> str:
    return json.dumps([{"section": s.name, "doc": s.doc, "fields": [
        {"name": r.name, "type": r.type, "default": _jsonable(r.default), "value": _jsonable(r.value) if r.set else None,
         "set": r.set, "description": r.description} for r in s.rows]} for s in chosen], indent=2)


def explain_command(recipe: str, section: str | None = None, preset: str | None = None, json_out: bool = False) -> str:
    """Print the fields of recipe ``recipe`` (a path or a shipped recipe's name) under
    ``preset``, only ``section`` and below when given; returns what it printed (plain or JSON)."""
    from wm_framework.errors import RecipeError, WMUsageError
    from wm_framework.recipe import load_toml, resolve
    from wm_framework.shipped_recipes import find_recipe

    path = find_recipe(recipe)
    try:
        found = sections(resolve(load_toml(path), preset=preset), unused_stages=bool(section))
    except RecipeError as e:  # one line: `wm validate` is the command that lists every problem
        more = len(e.problems) - 1
        raise WMUsageError(f"{path}: {e.problems[0]}" + (f" (and {more} more; `wm validate {recipe}` lists them)"
                                                        if more > 0 else "")) from None
    chosen = select(found, section)
    if json_out:
        text = as_json(chosen)
        print(text)
        return text
    if sys.stdout.isatty():
        rich_tables(chosen)
        return ""
    text = plain(chosen)
    sys.stdout.write(text)
    return text
