"""wm-framework: train and evaluate world models across environments.

The public API (contract) is small and imports nothing heavy:

- ``hookimpl``: the marker plugins decorate their ``register_*`` hooks with.
- ``lazy("module:attr")``: register a factory without importing it (keeps `wm` fast).
- ``create(kind, name, **params)``: build any registered component.
- ``make_env(name, **params)``: shorthand for ``create("envs", name, **params)``.
- ``components(kind=None)``: what is registered, as ``{kind: {name: Component}}``.
- ``reset_registry()``: forget loaded plugins (after installing one, or between tests).
- ``load_run(path)``: a finished run directory; ``.load_model("best")``, ``.checkpoints()``, ``.results()``.
- ``get_logger(__name__)``: a plugin's logger; its lines reach the console and the run's run.log.
"""

from __future__ import annotations

from wm_framework.errors import RecipeError, WMError, WMRuntimeError, WMUsageError
from wm_framework.hookspecs import hookimpl
from wm_framework.registry import lazy

__version__ = "0.1.0"

__all__ = [
    "hookimpl",
    "lazy",
    "create",
    "make_env",
    "components",
    "reset_registry",
    "load_run",
    "get_logger",
    "WMError",
    "WMUsageError",
    "WMRuntimeError",
    "RecipeError",
    "__version__",
]


def create(kind: str, name: str, *args, **params):
    """Build the component ``name`` of ``kind`` (e.g. "encoders"); policies take the env first."""
    from wm_framework.plugins import get_registry

    return get_registry().create(kind, name, *args, **params)


def make_env(name: str, **params):
    """Build a registered environment: a ``gymnasium.Env``."""
    return create("envs", name, **params)


def components(kind: str | None = None):
    """Registered components: ``{kind: {name: Component}}``, or ``{name: Component}`` for one kind."""
    from wm_framework.plugins import get_registry

    reg = get_registry()
    return reg.by_kind(kind) if kind else reg.all()


def reset_registry() -> None:
    """Forget loaded plugins and components; the next use loads them again."""
    from wm_framework.plugins import reset_registry as reset

    reset()


def load_run(path, device: str | None = None):
    """Open a run directory (``runs/<timestamp>_<recipe>/``): ``run.load_model("best")`` gives the
    trained WorldModel in eval mode, ``run.checkpoints()`` what was saved, ``run.results()`` the figures."""
    from wm_framework.runs.context import load_run as _load_run

    return _load_run(path, device)


def get_logger(name: str):
    """A ``logging.Logger`` for a plugin module (pass ``__name__``): what it logs reaches the
    console (as ``wm --quiet`` / ``--verbose`` chose) and the run.log of the run at work."""
    from wm_framework.console import get_logger as _get_logger

    return _get_logger(name)
