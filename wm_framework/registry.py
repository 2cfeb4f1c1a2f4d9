"""Components by kind and name.

Every plugin registers factories here through its ``register_*`` hooks; recipes and
the Python API build components with ``create(kind, name, **params)``. Unknown names
and unknown parameters are errors that list what exists, so a typo in a recipe is
one readable line rather than a ``TypeError`` deep in a factory.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from wm_framework.errors import WMRuntimeError, WMUsageError
from wm_framework.hookspecs import KINDS

# Singular and short spellings people (and recipe sections) use for each kind.
_ALIASES = {
    "env": "envs", "environment": "envs", "policy": "policies", "encoder": "encoders",
    "predictor": "predictors", "loss": "losses", "probe": "probes", "planner": "planners",
    "launcher": "launchers", "stage": "stages", "probe_preset": "probe_presets",
}


_SINGULAR = {"envs": "env", "policies": "policy", "encoders": "encoder", "predictors": "predictor",
             "losses": "loss", "probes": "probe", "probe_presets": "probe preset", "planners": "planner",
             "launchers": "launcher", "stages": "stage"}


def singular(kind: str) -> str:
    """'losses' -> 'loss', for messages."""
    return _SINGULAR.get(kind, kind)


def normalize_kind(kind: str) -> str:
    """Map "env"/"encoder"/... to the canonical plural kind, or raise listing the kinds."""
    k = _ALIASES.get(kind, kind)
    if k not in KINDS:
        raise WMUsageError(f"unknown component kind '{kind}'; kinds are: {', '.join(KINDS)}")
    return k


def resolved(value):
    """A ``lazy("module:attr")`` reference imported (e.g. a stage's ``config=`` meta); anything else as is."""
    return value.resolve() if isinstance(value, LazyFactory) else value


class LazyFactory:
    """A factory named by "package.module:attr", imported only when built or inspected.

    Registering ``lazy("my_pkg.nets:ViTEncoder")`` instead of the class keeps
    plugin loading free of torch, so `wm --help` and `wm plugins list` stay fast.
    """

    def __init__(self, target: str):
        if ":" not in target:
            raise ValueError(f"lazy factory '{target}': expected 'module:attr'")
        self.target = target
        self._obj = None

    def resolve(self):
        if self._obj is None:
            import importlib

            module, attr = self.target.split(":", 1)
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._obj = obj
        return self._obj

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self):
        return inspect.signature(self.resolve())

    @property
    def __wrapped_doc__(self):
        return self.resolve().__doc__

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


def lazy(target: str) -> LazyFactory:
    """Refer to a factory by "module:attr" without importing it (see LazyFactory)."""
    return LazyFactory(target)


def factory_doc(factory) -> str | None:
    return factory.__wrapped_doc__ if isinstance(factory, LazyFactory) else getattr(factory, "__doc__", None)


@dataclass(frozen=True)
class Param:
    """One factory parameter as shown by `wm components list`."""

    name: str
    default: Any = inspect.Parameter.empty
    annotation: str = ""

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> str:
        text = self.name + (f": {self.annotation}" if self.annotation else "")
        return text if self.required else f"{text} = {self.default!r}"


@dataclass
class Component:
    """A registered factory with the plugin that registered it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The registered description, else the factory docstring's first line (imports a lazy factory)."""
        if self.description:
            return self.description
        try:
            return _first_line(factory_doc(self.factory))
        except Exception:  # noqa: BLE001 - a broken lazy target shows up when it is built
            return ""

    def params(self) -> list[Param]:
        """Keyword parameters the factory accepts (data parameters included)."""
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return []
        out = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if self.kind == "policies" and p.name == "env":
                continue  # policies receive the env positionally
            ann = p.annotation
            ann_text = "" if ann is p.empty else (ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann)))
            out.append(Param(p.name, p.default, ann_text))
        return out

    def accepts_any(self) -> bool:
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return True
        return any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())

    def check_params(self, params: dict) -> None:
        """Raise WMUsageError naming unknown parameters and listing the accepted ones."""
        if self.accepts_any():
            return
        known = {p.name for p in self.params()}
        unknown = [k for k in params if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise WMUsageError(
                f"{singular(self.kind)} '{self.name}': unknown parameter "
                f"{', '.join(hints)}; accepted: {', '.join(sorted(known)) or '(none)'}"
            )
        self._refuse_negative_sizes(params)

    def _refuse_negative_sizes(self, params: dict) -> None:
        """A parameter whose default is a positive int (or a list of them) is a size or a count
        (``hidden = 256``, ``channels = [32, 64]``): a negative value cannot build anything
        and would reach torch as "negative dimension", so it is refused here, by name."""
        defaults = {p.name: p.default for p in self.params()}
        for key, value in params.items():
            default, given = defaults.get(key), value if isinstance(value, (list, tuple)) else [value]
            default = default if isinstance(default, (list, tuple)) else [default]
            if not default or not all(_positive_int(d) for d in default):
                continue
            bad = [v for v in given if isinstance(v, int) and not isinstance(v, bool) and v < 0]
            if bad:
                raise WMUsageError(f"{singular(self.kind)} '{self.name}': {key} = {value} is negative; it is a size "
                                   f"or a count (default {defaults[key]})")


class DuplicateComponentError(WMUsageError):
    """Two plugins registered the same name for the same kind."""


class Registry:
    """Components keyed by (kind, name)."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {k: {} for k in KINDS}

    def add(self, kind: str, name: str, factory: Callable, plugin: str, **meta) -> Component:
        kind = normalize_kind(kind)
        if not callable(factory):
            raise WMUsageError(f"{kind} '{name}' from plugin '{plugin}': factory is not callable")
        existing = self._items[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{kind} '{name}' is registered by two plugins: '{existing.plugin}' and '{plugin}'"
            )
        description = meta.pop("description", "")
        comp = Component(kind, name, factory, plugin, description, meta)
        self._items[kind][name] = comp
        return comp

    def remove_plugin(self, plugin: str) -> None:
        """Drop everything one plugin registered (used when its registration fails half-way)."""
        for kind in self._items:
            self._items[kind] = {n: c for n, c in self._items[kind].items() if c.plugin != plugin}

    def get(self, kind: str, name: str) -> Component:
        kind = normalize_kind(kind)
        comp = self._items[kind].get(name)
        if comp is None:
            names = sorted(self._items[kind])
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise WMUsageError(
                f"unknown {singular(kind)} '{name}'{hint}; "
                f"registered: {', '.join(names) or '(none)'}"
            )
        return comp

    def create(self, kind: str, name: str, /, *args, **params):
        """Build a component; bad names/params raise WMUsageError, a crashing factory WMRuntimeError."""
        import warnings

        comp = self.get(kind, name)
        comp.check_params(params)
        try:
            # Warnings of the build are held back until it is known to be usable: a refused
            # component (below) must be one line, not torch's "zero-element tensors" warning first.
            with warnings.catch_warnings(record=True) as held:
                warnings.simplefilter("always")
                obj = comp.factory(*args, **params)
        except (WMUsageError, WMRuntimeError):
            raise
        except (TypeError, ValueError) as e:
            raise WMUsageError(f"{comp.kind} '{name}' (plugin '{comp.plugin}'): {e}") from e
        except RuntimeError as e:
            raise WMRuntimeError(f"{comp.kind} '{name}' (plugin '{comp.plugin}') failed: {type(e).__name__}: {e}") from e
        except Exception as e:  # a plugin bug must not surface as a bare traceback
            raise WMRuntimeError(
                f"{comp.kind} '{name}' (plugin '{comp.plugin}') failed: {type(e).__name__}: {e}"
            ) from e
        from wm_framework.contracts import check_component  # the contract of its kind, checked once here

        check_component(comp.kind, name, obj)
        _refuse_empty_weights(comp.kind, name, obj, params)
        for w in held:  # a usable component: its warnings go out as they would have
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        return obj

    def by_kind(self, kind: str) -> dict[str, Component]:
        return dict(self._items[normalize_kind(kind)])

    def all(self) -> dict[str, dict[str, Component]]:
        return {k: dict(v) for k, v in self._items.items()}

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[normalize_kind(kind)])


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _refuse_empty_weights(kind: str, name: str, obj, params: dict) -> None:
    """A module with a weight of zero elements was given a size of 0 (``hidden = 0``): it
    would train nothing and report numbers as if it had, so it is a usage error."""
    named = getattr(obj, "named_parameters", None)
    if not callable(named):
        return
    for pname, p in named():
        if p.numel() == 0:
            raise WMUsageError(f"{kind} '{name}': weight '{pname}' has shape {tuple(p.shape)}, no element; "
                               f"a size parameter is 0 (params: {params})")


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""
