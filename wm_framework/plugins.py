"""Plugin loading, isolation and listing.

Built-in and third-party plugins load the same way: every entry point of the
``wm_framework`` group names a module of ``@hookimpl`` functions. One plugin's failure
never takes ``wm`` down: it is recorded (name, error) and skipped, unless
``WM_STRICT_PLUGINS=1``. ``WM_DISABLE_PLUGINS=a,b`` blocks plugins by name.

A plugin whose optional dependency is missing is ``unavailable``: it declares
``WM_REQUIRES = ["ale_py", ...]`` and ``WM_INSTALL_HINT = 'pip install "wm-framework[atari]"'``
at module level, and imports those packages only inside its factories.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import importlib.util
import os
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from wm_framework import hookspecs
from wm_framework.errors import WMUsageError
from wm_framework.registry import DuplicateComponentError, Registry, singular

ENTRY_POINT_GROUP = hookspecs.PROJECT
#: The distribution whose plugins are first-party: they load first and keep their names.
FIRST_PARTY = "wm-framework"


@dataclass
class PluginInfo:
    """One row of `wm plugins list` (the JSON fields are the contract)."""

    name: str
    package: str
    version: str
    status: str = "ok"  # ok | unavailable | failed | disabled
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. a component skipped on a name clash
    module: ModuleType | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "components": self.components,
            "warnings": self.warnings,
        }


class PluginLoadError(WMUsageError):
    """Raised instead of skipping a plugin when WM_STRICT_PLUGINS=1."""


def _env_list(name: str) -> set[str]:
    return {x.strip() for x in os.environ.get(name, "").split(",") if x.strip()}


def _normal(dist_name: str) -> str:
    """Distribution names compare case- and separator-insensitively (PEP 503)."""
    return dist_name.lower().replace("_", "-").replace(".", "-")


def _describe(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"called sys.exit({e.code!r})"
    if isinstance(e, KeyboardInterrupt):
        return "raised KeyboardInterrupt"
    return f"{type(e).__name__}: {e}"


def _strict() -> bool:
    return os.environ.get("WM_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes")


def _dist_name_version(dist, cache: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(name, version) of an entry point's distribution, its METADATA parsed once per
    distribution: `dist.version` and `dist.metadata[...]` each re-parse the file, which
    was a third of `wm --help` with a dozen first-party entry points."""
    if dist is None:
        return "?", "?"
    key = str(getattr(dist, "_path", id(dist)))
    if key not in cache:
        meta = dist.metadata
        cache[key] = (meta["Name"], meta["Version"])
    return cache[key]


class PluginManager:
    """Loads plugins into a pluggy manager and a component Registry."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: dict[str, PluginInfo] = {}

    # -- loading ---------------------------------------------------------------------
    def load_entry_points(self) -> None:
        disabled = _env_list("WM_DISABLE_PLUGINS")
        dist_cache: dict[str, tuple[str, str]] = {}
        found = [(ep, *_dist_name_version(getattr(ep, "dist", None), dist_cache))
                 for ep in md.entry_points(group=ENTRY_POINT_GROUP)]
        # First-party plugins load first, so on a clash their names and components win.
        found.sort(key=lambda f: (_normal(f[1]) != FIRST_PARTY, f[0].name))
        for ep, package, version in found:
            holder = self.plugins.get(ep.name)
            if holder is not None:
                if holder.package == package:  # the same distribution found twice on sys.path
                    continue
                key = f"{ep.name} ({package})"
                self.plugins[key] = PluginInfo(ep.name, package=package, version=version, status="failed",
                                               error=f"entry point name '{ep.name}' is already taken by "
                                                     f"{holder.package}; not loaded (rename the entry point)")
                continue
            info = PluginInfo(ep.name, package=package, version=version)
            self.plugins[ep.name] = info
            if ep.name in disabled:
                info.status, info.error = "disabled", "disabled by WM_DISABLE_PLUGINS"
                continue
            try:
                module = ep.load()
            except ModuleNotFoundError as e:
                self._fail(info, "unavailable", f"missing module '{e.name}': pip install {e.name}", e)
                continue
            except BaseException as e:  # noqa: BLE001 - isolate any plugin bug, sys.exit and Ctrl-C at import included
                self._fail(info, "failed", f"import failed: {_describe(e)}", e)
                continue
            self.register_module(module, ep.name, info)

    def register_module(self, module: ModuleType, name: str, info: PluginInfo | None = None) -> PluginInfo:
        """Register one plugin module (entry point, test or notebook) and run its hooks."""
        if info is None:
            info = PluginInfo(name, package=getattr(module, "__name__", name), version="-")
            self.plugins[name] = info
        info.module = module
        missing = [m for m in getattr(module, "WM_REQUIRES", []) if importlib.util.find_spec(m) is None]
        if missing:
            hint = getattr(module, "WM_INSTALL_HINT", "pip install " + " ".join(missing))
            self._fail(info, "unavailable", f"missing {', '.join(missing)}; install with: {hint}", None)
            return info
        try:
            self.pm.register(module, name=name)
        except BaseException as e:  # noqa: BLE001 - e.g. a hook with a wrong signature
            self._fail(info, "failed", f"registration failed: {_describe(e)}", e)
            return info
        info.warnings.extend(self._unknown_hooks(module))
        try:
            self._run_register_hooks(name, info)
        except BaseException as e:  # noqa: BLE001 - sys.exit or Ctrl-C in a hook included
            self.registry.remove_plugin(name)
            info.components = {}
            self.pm.unregister(name=name)
            self._fail(info, "failed", f"registration failed: {_describe(e)}", e)
        return info

    def _unknown_hooks(self, module: ModuleType) -> list[str]:
        """A hook implementation whose name matches no hookspec (a typo) is never called: say so."""
        known = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
        out = []
        for caller in self.pm.get_hookcallers(module) or []:
            if caller.spec is None:
                close = difflib.get_close_matches(caller.name, known, n=1)
                out.append(f"hook '{caller.name}' matches no hookspec and is never called"
                           + (f" (did you mean '{close[0]}'?)" if close else ""))
        return out

    def _run_register_hooks(self, name: str, info: PluginInfo) -> None:
        for kind in hookspecs.KINDS:
            caller = getattr(self.pm.hook, f"register_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin_name != name:
                    continue

                def register(comp_name, factory, _kind=kind, **meta):
                    try:
                        self.registry.add(_kind, comp_name, factory, name, **meta)
                    except DuplicateComponentError:
                        # The earlier registration (first-party plugins load first) keeps the name.
                        holder = self.registry.get(_kind, comp_name).plugin
                        info.warnings.append(f"{singular(_kind)} '{comp_name}' not registered: the name is "
                                             f"taken by plugin '{holder}'")
                        return
                    info.components.setdefault(_kind, []).append(comp_name)

                impl.function(register=register)

    def _fail(self, info: PluginInfo, status: str, message: str, exc: BaseException | None) -> None:
        info.status, info.error = status, message
        if status == "failed" and _strict():
            raise PluginLoadError(f"plugin '{info.name}' ({info.package}): {message}") from exc

    # -- commands --------------------------------------------------------------------
    def add_commands(self, app) -> None:
        """Let each loaded plugin add Typer commands; a failing plugin is reported, not fatal."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except BaseException as e:  # noqa: BLE001
                info = self.plugins.get(impl.plugin_name)
                if info is not None:
                    self._fail(info, "failed", f"register_commands failed: {_describe(e)}", e)

    def versions(self) -> dict[str, str]:
        """Plugin name -> version, saved into run directories and stores."""
        return {n: p.version for n, p in self.plugins.items() if p.status == "ok"}


_PM: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager; plugins load on first use (so `wm --help` stays fast)."""
    global _PM
    if _PM is None:
        pm = PluginManager()
        pm.load_entry_points()
        _PM = pm
    return _PM


def reset_plugin_manager() -> None:
    global _PM
    _PM = None


def get_registry() -> Registry:
    """The process-wide registry, filled by loading every plugin on first use."""
    return get_plugin_manager().registry


def reset_registry() -> None:
    """Forget loaded plugins and components (tests, or after installing a plugin)."""
    reset_plugin_manager()
