"""The recipes that ship inside the package: list them, find one by name, copy one.

``recipes/`` is installed as the package ``wm_framework.recipes`` (pyproject's
package-dir), so a wheel carries the same TOML files a clone has and ``wm run
lewm_breakout`` works from any directory (conventions of torchtune's ``tune ls`` /
``tune cp``). A path that exists always wins over a shipped name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from wm_framework.errors import WMUsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class ShippedRecipe:
    """One shipped recipe, as `wm recipes list` shows it."""

    name: str          # file stem: what `wm run NAME` takes
    path: Path         # where the installed file lies
    description: str   # the recipe's one-line `description`
    needs_gpu: bool    # whether the full-size run (no preset) needs a GPU
    presets: tuple[str, ...]  # the recipe's [presets.*] names


def recipes_dir() -> Path:
    """The installed recipes folder (the repo's recipes/ under an editable install)."""
    return Path(str(resources.files("wm_framework.recipes")))


def shipped_recipes() -> list[ShippedRecipe]:
    out = []
    for path in sorted(recipes_dir().glob("*.toml")):
        data = tomllib.loads(path.read_text())
        presets = data.get("presets", {})
        out.append(ShippedRecipe(path.stem, path, str(data.get("description", "")), bool(data.get("needs_gpu", False)),
                                 tuple(presets) if isinstance(presets, dict) else ()))
    return out


def _shipped_path(stem: str, unknown: str) -> Path:
    """The shipped recipe file named ``stem``; else WMUsageError ``unknown`` + a did-you-mean."""
    by_name = {r.name: r.path for r in shipped_recipes()}
    if stem in by_name:
        return by_name[stem]
    close = difflib.get_close_matches(stem, list(by_name), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise WMUsageError(f"{unknown}{hint}; `wm recipes list` shows the shipped ones")


def _stem(name: str) -> str:
    return name[:-5] if name.endswith(".toml") else name


def find_recipe(name_or_path: str | Path) -> Path:
    """An existing file as given, else the shipped recipe of that name (``.toml`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = _stem(path.name)
    unknown = f"{name_or_path}: recipe file not found, and no shipped recipe is named '{stem}'"
    # A bare name, or a clone-relative `recipes/NAME.toml` used from another directory.
    if path.parent != Path(".") and path.parent.name != "recipes":
        raise WMUsageError(f"{unknown}; `wm recipes list` shows the shipped ones")
    return _shipped_path(stem, unknown)


def copy_recipe(name: str, dest: str | Path | None = None, force: bool = False) -> Path:
    """Copy a shipped recipe to ``dest`` (a file, or a folder to put NAME.toml in; default
    ./NAME.toml) to edit; an existing file is kept unless ``force``."""
    stem = _stem(name)
    source = _shipped_path(stem, f"{name}: no shipped recipe of that name")
    target = Path(dest) if dest is not None else Path(f"{stem}.toml")
    if target.is_dir():
        target = target / f"{stem}.toml"
    if target.exists() and not force:
        raise WMUsageError(f"{target}: already exists (use --force to overwrite it)")
    from wm_framework.atomic import atomic_write_bytes

    atomic_write_bytes(target, source.read_bytes())
    return target
