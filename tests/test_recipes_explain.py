"""Every value a run uses, and what each one means.

* ``recipe.resolved.toml`` holds the defaults the recipe did not set (schema, stage tables,
  component factories), still loads as a recipe, resumes (old short files too) and reuses
  the store the short form built;
* filling a component's defaults builds the same module (every registered encoder,
  predictor and loss with its ``example=`` parameters);
* ``wm recipes explain NAME|PATH [SECTION]`` lists fields with type, default, value and
  description; a section filter; one line and exit 2 for an unknown section or a bad recipe.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from conftest import ROOT

RECIPE = """
name = "toy_full"
seed = 3
stages = ["data", "train"]
[data]
train = "{store}"
window = 3
frameskip = 1
val_fraction = 0.25
[data.collect]
env = {{ type = "linear_state", max_steps = 20 }}
policies = [{{ type = "random" }}]
episodes = 4
[model]
encoder = {{ type = "mlp", latent_dim = 8, hidden = 16 }}
predictor = {{ type = "mlp", hidden = 16 }}
[model.losses.pred]
type = "mse"
[train]
steps = 4
batch_size = 8
eval_every = 2
checkpoint_every = 2
log_every = 2
threads = 1
"""


def _resolved(run) -> tuple[str, dict]:
    text = (run / "recipe.resolved.toml").read_text()
    return text, tomllib.loads(text)


def test_resolved_file_holds_every_default_loads_back_and_resumes(tmp_path):
    from wm_framework.recipe import validate
    from wm_framework.resolved_recipe import HEADER, write_resolved
    from wm_framework.runs.run import run_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(store=tmp_path / "toy.zarr"))
    run = run_recipe(str(recipe), [], out=str(tmp_path / "runs"), progress=False)
    text, data = _resolved(run)
    assert text.startswith(HEADER)
    train = data["train"]
    assert (train["weight_decay"], train["grad_clip"], train["precision"], train["betas"]) == (0.01, 1.0, "auto", [0.9, 0.999])
    assert data["model"]["encoder"] == {"type": "mlp", "latent_dim": 8, "hidden": 16, "depth": 2, "layernorm": False}
    assert data["model"]["losses"]["pred"] == {"type": "mse", "weight": 1.0, "detach_target": False}
    assert data["data"]["collect"]["env"]["decay"] == 0.95 and data["data"]["collect"]["policies"] == [{"type": "random", "seed": 0}]
    assert data["data"]["collect"]["workers"] == 1 and data["data"]["split_seed"] == 0
    # No null in TOML: unset settings and data parameters are comment lines in their table.
    assert "# epochs = (unset)" in text and "# obs_shape = (from the data)" in text and "# test = (unset)" in text
    assert "obs_shape" not in data["model"]["encoder"]  # injected from the store, never pinned
    validate(data)

    # --resume reads the full file, re-runs the data stage on the store the short form built, trains on.
    run_recipe(None, ["train.steps=6"], resume=str(run), progress=False)
    text, data = _resolved(run)
    assert text.startswith(HEADER) and data["train"]["steps"] == 6 and data["train"]["weight_decay"] == 0.01
    assert json.loads((run / "results.json").read_text())["train"]["global_step"] == 6

    # An old run directory has the short file: it resumes, and stays short (its defaults are not known).
    short = tomllib.loads(recipe.read_text())
    short["train"]["steps"] = 6
    write_resolved(run, short, fill=False)
    assert "weight_decay" not in (run / "recipe.resolved.toml").read_text()
    run_recipe(None, ["train.steps=8"], resume=str(run), progress=False)
    text, data = _resolved(run)
    assert not text.startswith(HEADER) and data["train"]["steps"] == 8 and "weight_decay" not in data["train"]
    assert json.loads((run / "results.json").read_text())["train"]["global_step"] == 8


def test_stores_match_tables_with_or_without_their_defaults(tmp_path):
    from wm_framework.component_defaults import same_component, same_env_record
    from wm_framework.data.collect import collect

    assert same_component("policies", {"type": "random"}, {"type": "random", "seed": 0})
    assert not same_component("policies", {"type": "random"}, {"type": "random", "seed": 3})
    assert same_env_record({"name": "linear_state", "params": {}}, {"name": "linear_state", "params": {"decay": 0.95}})
    assert not same_env_record({"name": "linear_state", "params": {}}, {"name": "linear_state", "params": {"decay": 0.5}})
    assert not same_env_record({"name": "nope", "params": {}}, {"name": "nope", "params": {"x": 1}})  # unknown: as written
    store = tmp_path / "s.zarr"
    collect(store, env={"type": "linear_state", "max_steps": 8}, policies=[{"type": "random"}], episodes=1, progress=False)
    # Topped up from a resolved file's tables (defaults written out): the same env and policy.
    full_env = {"type": "linear_state", "max_steps": 8, "dim": 4, "action_dim": 2, "decay": 0.95}
    assert collect(store, env=full_env, policies=[{"type": "random", "seed": 0}], episodes=2, progress=False).num_episodes == 2
    from wm_framework.errors import WMUsageError

    with pytest.raises(WMUsageError, match="incompatible"):
        collect(store, env={**full_env, "decay": 0.5}, policies=[{"type": "random"}], episodes=3, progress=False)


def test_filling_defaults_builds_the_same_components():
    import torch

    from wm_framework.component_defaults import fill_component
    from wm_framework.plugins import get_registry

    reg = get_registry()
    checked = []
    for kind in ("encoders", "predictors", "losses"):
        for name, comp in sorted(reg.by_kind(kind).items()):
            table = {"type": name, **(comp.meta.get("example") or {})}
            full = fill_component(kind, table, reg)
            built = []
            for t in (table, full):
                torch.manual_seed(0)
                built.append(reg.create(kind, name, **{k: v for k, v in t.items() if k not in ("type", "weight")}))
            a, b = built
            if hasattr(a, "state_dict"):
                sa, sb = a.state_dict(), b.state_dict()
                assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), f"{kind} {name}"
            checked.append(f"{kind}:{name}")
    assert {"encoders:mlp", "encoders:vit", "predictors:mlp", "losses:mse"} <= set(checked) and len(checked) > 15


def test_a_sweep_file_leaves_components_to_each_run_and_expands_the_same():
    from wm_framework.recipe import expand_sweep, load_toml, resolve
    from wm_framework.resolved_recipe import resolved_text

    data = resolve(load_toml(ROOT / "recipes" / "toy_ball.toml"), {"sweep.grid": {"train.lr": [1e-3, 1e-2]}})
    text = resolved_text(data)
    loaded = tomllib.loads(text)
    assert loaded["model"]["predictor"] == {"type": "mlp", "hidden": 256}  # a grid may change a component's type
    assert loaded["sweep"]["launcher"]["type"] == "local" and "per_gpu" in loaded["sweep"]["launcher"]
    assert loaded["train"]["weight_decay"] == 0.01 and "each run's own file" in text
    assert [label for label, _ in expand_sweep(loaded)] == [label for label, _ in expand_sweep(data)]


def test_param_docs_read_google_numpy_and_sphinx_docstrings():
    from wm_framework.recipe_explain import param_docs

    google = """Build it.

    Args:
        size: side in pixels
            (at least 16).
        mode (str): "a" or "b".

    Returns:
        a thing.
    """
    assert param_docs(google) == {"size": "side in pixels (at least 16).", "mode": '"a" or "b".'}
    numpy = """Build it.

    Parameters
    ----------
    size : int
        side in pixels.
    depth
        blocks.

    Returns
    -------
    a thing
    """
    assert param_docs(numpy) == {"size": "side in pixels.", "depth": "blocks."}
    assert param_docs(":param size: side in pixels.\n:param int depth: blocks.") == {"size": "side in pixels.",
                                                                                     "depth": "blocks."}
    first_line = """Args:
            size: side
                in pixels.
            depth: blocks.
        Returns:
            a thing.
        """
    assert param_docs(first_line) == {"size": "side in pixels.", "depth": "blocks."}


def test_explain_lists_fields_sections_and_errors_in_one_line(capsys):
    from wm_framework.cli import main

    assert main(["recipes", "explain", "toy_ball"]) == 0
    out = capsys.readouterr().out
    assert "  weight_decay: float = 0.01  (default)\n      AdamW weight decay" in out
    assert "  lr: float = 0.001  (recipe; default 0.0003)" in out
    assert "[model.predictor] mlp (plugin blocks)" in out and "  hidden: int = 256  (recipe; default 128)" in out
    assert "  depth: int = 2  (default)\n      hidden layers" in out  # from the factory's Args: docstring
    assert "  size: int = 32  (recipe; default 32)" in out  # data.collect.env
    assert "latent_dim: int = (from the data)" in out

    assert main(["recipes", "explain", "toy_ball", "train"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert heads[0].startswith("[train] ") and all(h.startswith("[train") for h in heads) and len(heads) >= 3
    assert main(["recipes", "explain", str(ROOT / "recipes" / "toy_ball.toml"), "model.encoder", "--json"]) == 0
    (enc,) = json.loads(capsys.readouterr().out)
    assert enc["section"] == "model.encoder" and enc["fields"][0] == {
        "name": "type", "type": "str", "default": "required", "value": "identity", "set": True,
        "description": "the registered encoder (`wm components list --kind encoders`)"}
    assert main(["recipes", "explain", "toy_ball", "train", "--preset", "smoke", "--json"]) == 0
    steps = next(f for f in json.loads(capsys.readouterr().out)[0]["fields"] if f["name"] == "steps")
    assert steps["value"] == 20 and steps["set"]
    assert main(["recipes", "explain", "toy_ball", "eval"]) == 0  # a stage the recipe does not run: its defaults
    assert "[eval] " in capsys.readouterr().out

    assert main(["recipes", "explain", "toy_ball", "trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "section 'trian'" in err[0] and "did you mean 'train'?" in err[0]


def test_explain_of_a_bad_recipe_is_one_line(tmp_path, capsys):
    from wm_framework.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[train]\nstepz = 3\nlr = "fast"\n')
    assert main(["recipes", "explain", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train." in err[0] and "wm validate" in err[0]
