"""Plugin loading, isolation and the registry's errors."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
import torch

import wm_framework
from wm_framework import hookimpl
from wm_framework.errors import WMUsageError
from wm_framework.plugins import PluginLoadError, PluginManager
from wm_framework.registry import DuplicateComponentError, Registry

from conftest import ROOT, run_wm


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


@dataclasses.dataclass
class _ToyEnv:
    """Just enough of the env contract (wm_framework/contracts.py) to be created."""

    size: int
    speed: float
    observation_space = action_space = None

    def reset(self, seed=None):
        return None, {}

    def step(self, action):
        return None, 0.0, False, False, {}


def _env_factory(size: int = 3, speed: float = 1.0):
    """A toy factory."""
    return _ToyEnv(size, speed)


def test_a_component_breaking_its_contract_fails_when_created_naming_what_is_missing():
    reg = Registry()
    reg.add("envs", "tuple_env", lambda: ("not", "an", "env"), "p")
    with pytest.raises(WMUsageError, match="env 'tuple_env' .* has no reset, step, observation_space, action_space"):
        reg.create("envs", "tuple_env")
    reg.add("encoders", "no_dim", lambda: torch.nn.Linear(2, 2), "p")
    with pytest.raises(WMUsageError, match="encoder 'no_dim' .* has no out_dim"):
        reg.create("encoders", "no_dim")
    reg.add("predictors", "bad_hook", lambda: types.SimpleNamespace(forward=lambda z, a: z, next_latent=3), "p")
    with pytest.raises(WMUsageError, match="next_latent must be callable"):
        reg.create("predictors", "bad_hook")


def test_register_and_create_with_params():
    pm = PluginManager()
    pm.register_module(_module("p1", register_envs=lambda register: register("toy", _env_factory)), "p1")
    assert pm.plugins["p1"].status == "ok"
    assert pm.plugins["p1"].components == {"envs": ["toy"]}
    assert pm.registry.create("envs", "toy", size=5) == _ToyEnv(5, 1.0)


def test_unknown_name_lists_registered_and_suggests():
    reg = Registry()
    reg.add("encoders", "vit", _env_factory, "p")
    reg.add("encoders", "mlp", _env_factory, "p")
    with pytest.raises(WMUsageError, match=r"unknown encoder 'vti' \(did you mean 'vit'\?\); registered: mlp, vit"):
        reg.create("encoders", "vti")


def test_unknown_param_is_named_with_accepted_list():
    reg = Registry()
    reg.add("envs", "toy", _env_factory, "p")
    with pytest.raises(WMUsageError, match=r"unknown parameter 'sise' \(did you mean 'size'\?\); accepted: size, speed"):
        reg.create("envs", "toy", sise=3)


def test_duplicate_name_keeps_the_earlier_component_and_reports_the_newcomer():
    pm = PluginManager()
    pm.register_module(_module("a", register_losses=lambda register: register("mse", _env_factory)), "first")
    info = pm.register_module(_module("b", register_losses=lambda register: (register("mse", _env_factory),
                                                                             register("own", _env_factory))), "second")
    assert info.status == "ok" and info.components == {"losses": ["own"]}  # the rest of the newcomer still loads
    assert info.warnings == ["loss 'mse' not registered: the name is taken by plugin 'first'"]
    assert pm.registry.get("losses", "mse").plugin == "first"
    assert pm.plugins["first"].status == "ok"
    with pytest.raises(DuplicateComponentError):
        Registry().add("losses", "x", _env_factory, "a") and None or _dup()


def _dup():
    r = Registry()
    r.add("losses", "x", _env_factory, "a")
    r.add("losses", "x", _env_factory, "b")


def test_failing_registration_is_isolated_and_rolled_back():
    def bad(register):
        register("half", _env_factory)
        raise RuntimeError("boom")

    pm = PluginManager()
    pm.register_module(_module("good", register_envs=lambda register: register("fine", _env_factory)), "good")
    info = pm.register_module(_module("bad", register_envs=bad), "bad")
    assert info.status == "failed" and "boom" in info.error
    assert "half" not in pm.registry.by_kind("envs")  # partial registration removed
    assert pm.registry.create("envs", "fine") == _ToyEnv(3, 1.0)


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("WM_STRICT_PLUGINS", "1")
    pm = PluginManager()
    with pytest.raises(PluginLoadError, match="bad"):
        pm.register_module(_module("bad", register_envs=lambda register: 1 / 0), "bad")


def test_missing_optional_dependency_is_unavailable_with_hint():
    mod = _module("needs", register_envs=lambda register: register("x", _env_factory))
    mod.WM_REQUIRES = ["surely_not_an_installed_module_xyz"]
    mod.WM_INSTALL_HINT = 'pip install "wm-framework[xyz]"'
    info = PluginManager().register_module(mod, "needs")
    assert info.status == "unavailable"
    assert 'pip install "wm-framework[xyz]"' in info.error and info.components == {}


def test_public_api_create_make_env_components():
    env = wm_framework.make_env("bouncing_ball")
    assert hasattr(env, "label_names")
    comps = wm_framework.components()
    assert "bouncing_ball" in comps["envs"] and "mlp" in comps["encoders"]
    assert set(wm_framework.components("losses")) >= {"mse", "huber"}
    with pytest.raises(WMUsageError, match="unknown component kind"):
        wm_framework.components("widgets")


def test_plugins_list_json_contract():
    r = run_wm("plugins", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    names = {row["name"] for row in rows}
    assert {"blocks", "core", "lewm", "atari"} <= names
    for row in rows:
        assert set(row) == {"name", "package", "version", "status", "error", "components", "warnings"}
        assert row["status"] in ("ok", "unavailable", "failed", "disabled")
    blocks = next(r for r in rows if r["name"] == "blocks")
    assert blocks["status"] == "ok" and "mlp" in blocks["components"]["encoders"]


def test_disable_plugins_env_var():
    r = run_wm("plugins", "list", "--json", env={"WM_DISABLE_PLUGINS": "blocks,lewm"})
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["blocks"]["status"] == "disabled" and rows["lewm"]["status"] == "disabled"
    assert rows["atari"]["status"] in ("ok", "unavailable")


def test_components_list_shows_params_and_plugin():
    r = run_wm("components", "list", "--kind", "encoders", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    mlp = rows["mlp"]
    assert mlp["plugin"] == "blocks" and mlp["kind"] == "encoders"
    assert {"name": "latent_dim", "default": 32, "required": False, "type": "int"} in mlp["params"]


#: Modules `wm --help` must not import: torch, NumPy and everything a plugin needs only
#: when it builds something (start-up is budgeted at 3x `import typer, rich`).
HEAVY_AT_STARTUP = ("torch", "numpy", "pydantic", "zarr", "ale_py", "gymnasium", "mujoco", "procgen", "gym3", "scipy",
                    "sklearn", "matplotlib", "PIL", "h5py", "pyarrow", "safetensors", "tensorboard", "wandb", "av",
                    "imageio", "tomli_w")


def test_help_does_not_import_torch_numpy_or_plugin_internals():
    code = ("import sys\nfrom wm_framework.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY_AT_STARTUP!r}]\n"
            # a plugin's package may load (its hooks register lazily); its submodules may not
            "heavy += [m for m in sys.modules if m.startswith('wm_plugins.') and m.count('.') > 1]\n"
            "heavy += [m for m in sys.modules if m.startswith('wm_framework.') and m.split('.')[1] not in "
            "('cli', 'errors', 'hookspecs', 'registry', 'plugins', 'commands', 'builtins', 'stops')]\n"
            "print('HEAVY=' + ','.join(sorted(set(heavy))))")
    import subprocess

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().endswith("HEAVY="), r.stdout + r.stderr


def test_lazy_policy_table_matches_the_atari_policies():
    """The atari plugin registers its policies by name without importing them; each lazy
    target must be the class the policies module maps that name to."""
    from wm_framework.plugins import get_registry
    from wm_plugins.atari.policies import POLICIES

    reg = get_registry()
    for name, cls in POLICIES.items():
        assert reg.get("policies", name).factory.resolve() is cls, name


def test_pyproject_lists_every_plugin_package():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(cfg["tool"]["setuptools"]["packages"])
    for init in (ROOT / "wm_plugins").glob("*/__init__.py"):
        assert f"wm_plugins.{init.parent.name}" in packages, init.parent.name
    for init in (ROOT / "wm_framework").glob("*/__init__.py"):
        assert f"wm_framework.{init.parent.name}" in packages, init.parent.name
    eps = cfg["project"]["entry-points"]["wm_framework"]
    for init in (ROOT / "wm_plugins").glob("*/__init__.py"):
        assert f"wm_plugins.{init.parent.name}" in eps.values(), init.parent.name


def test_exit_and_interrupt_in_a_plugin_are_isolated():
    """sys.exit, KeyboardInterrupt or any BaseException in a hook fail that plugin only."""
    def exits(register):
        register("half", _env_factory)
        sys.exit(3)

    def interrupts(register):
        raise KeyboardInterrupt

    pm = PluginManager()
    pm.register_module(_module("good", register_envs=lambda register: register("fine", _env_factory)), "good")
    assert pm.register_module(_module("x", register_envs=exits), "exits").error == "registration failed: called sys.exit(3)"
    assert "KeyboardInterrupt" in pm.register_module(_module("y", register_envs=interrupts), "interrupts").error
    assert "half" not in pm.registry.by_kind("envs") and pm.plugins["good"].status == "ok"


def test_misspelt_hook_name_is_reported_with_the_right_one():
    info = PluginManager().register_module(_module("typo", register_encoder=lambda register: None), "typo")
    assert info.status == "ok" and info.components == {}
    assert info.warnings == ["hook 'register_encoder' matches no hookspec and is never called "
                             "(did you mean 'register_encoders'?)"]


class _Dist:
    def __init__(self, name):
        self.metadata, self._path = {"Name": name, "Version": "1.0"}, f"/fake/{name}"


class _EntryPoint:
    def __init__(self, name, dist, load):
        self.name, self.dist, self._load = name, _Dist(dist), load

    def load(self):
        return self._load()


def test_first_party_plugins_load_first_and_keep_their_names(monkeypatch):
    """A third-party entry point cannot take a first-party name, and first-party components win clashes."""
    import wm_framework.plugins as plugins_mod

    loaded = []

    def module(name, comp):
        def load():
            loaded.append(name)
            return _module(name, register_envs=lambda register: register(comp, _env_factory))
        return load

    eps = [_EntryPoint("aaa_thirdparty", "acme-plugins", module("aaa", "toy")),
           _EntryPoint("atari", "acme-plugins", module("fake_atari", "breakout_clone")),
           _EntryPoint("atari", "wm-framework", module("atari", "breakout")),
           _EntryPoint("blocks", "wm_framework", module("blocks", "toy"))]
    monkeypatch.setattr(plugins_mod.md, "entry_points", lambda group: eps)
    pm = PluginManager()
    pm.load_entry_points()
    assert loaded == ["atari", "blocks", "aaa"]  # first-party first, the impostor never imported
    assert pm.plugins["atari"].package == "wm-framework" and pm.plugins["atari"].status == "ok"
    impostor = pm.plugins["atari (acme-plugins)"]
    assert impostor.status == "failed" and "already taken by wm-framework" in impostor.error
    assert pm.registry.get("envs", "toy").plugin == "blocks"  # the first-party component kept its name
    assert pm.plugins["aaa_thirdparty"].warnings == ["env 'toy' not registered: the name is taken by plugin 'blocks'"]


def test_a_plugin_calling_sys_exit_at_import_does_not_take_the_cli_down(tmp_path):
    """A real installed entry point (a dist-info on PYTHONPATH) whose module calls sys.exit(3) at import."""
    (tmp_path / "exiting_plugin.py").write_text("import sys\nsys.exit(3)\n")
    info = tmp_path / "exiting_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exiting-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wm_framework]\nexiting = exiting_plugin\n")
    env = {"PYTHONPATH": str(tmp_path)}
    r = run_wm("--version", env=env)
    assert r.returncode == 0 and r.stdout.strip(), (r.returncode, r.stdout, r.stderr)
    r = run_wm("plugins", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["exiting"]["status"] == "failed" and rows["exiting"]["error"] == "import failed: called sys.exit(3)"
    assert rows["atari"]["status"] == "ok"
