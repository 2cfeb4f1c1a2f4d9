"""TOML recipes: schema, overrides, named presets (`--preset cpu`, `--smoke`), sweeps and validation.

A recipe is data, never code. It is validated before anything runs and every problem
is reported at once as ``section.key: message``. Component tables ``{type = "NAME",
...params}`` are checked against the registry, so an unknown encoder or a misspelt
parameter is caught here rather than minutes into a run.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from wm_framework.errors import RecipeError, WMUsageError
from wm_framework.registry import resolved

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Whole numbers that must be written as such: `true` or `1e20` are refused, not coerced.
Int = Annotated[int, Strict()]
#: Seeds feed numpy's and torch's generators, which take 0 .. 2**32 - 1 (numpy refuses negatives).
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]
#: Sizes beyond these are refused up front (with the limit in the message) instead of hanging.
MAX_STEPS, MAX_EPISODES, MAX_EPISODE_STEPS = 10**9, 10**7, 10**7


class CollectConfig(_Strict):
    """How to build a store that is missing: an env, one or more policies, a count."""

    env: dict = Field(description="Environment table: {type = NAME, ...params}.")
    policies: list[dict] = Field(description="Policy tables [{type = NAME, ...params}]; each gets `episodes` episodes.")
    episodes: Int = Field(ge=1, le=MAX_EPISODES, description="Episodes per policy (in total, existing ones count).")
    max_steps: Int | None = Field(default=None, ge=1, le=MAX_EPISODE_STEPS, description="Cap on steps per episode.")
    workers: Int = Field(default=1, ge=1, le=1024, description="Worker processes running env + policy.")
    seed: Seed = Field(default=0, description="Base seed; episode seeds derive from it.")


class DataConfig(_Strict):
    """Where the episodes come from and how training windows are cut."""

    train: str = Field(description="Training store path (relative paths resolve against the current directory).")
    test: str | None = Field(default=None, description="Optional held-out store used as the test set.")
    window: int = Field(default=4, ge=2, description="Frames per training window (history + 1).")
    frameskip: int = Field(default=1, ge=1, description="Raw steps between consecutive frames of a window; actions are grouped in blocks of this size.")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="Fraction of training-store episodes held out for validation.")
    holdout_policies: list[str] = Field(default_factory=list, description="Policies whose episodes never enter training (the 'holdout' split).")
    split_seed: Seed = Field(default=0, description="Seed of the episode split.")
    mode: Literal["auto", "ram", "cache"] = Field(default="auto", description="Window sampler mode: decode into RAM, rotating chunk cache, or auto.")
    collect: CollectConfig | None = Field(default=None, description="How to build `train` when it is missing.")
    collect_test: CollectConfig | None = Field(default=None, description="How to build `test` when it is missing.")
    rebuild: bool = Field(default=False, description="Delete and collect again a store that was not built by its collect table (env, policies, seed); without it such a store stops the run.")


class ModelConfig(_Strict):
    """The composition: encoder -> predictor, trained on weighted loss terms."""

    encoder: dict = Field(description="Encoder table {type = NAME, ...params}.")
    predictor: dict = Field(description="Predictor table {type = NAME, ...params}.")
    losses: dict[str, dict] = Field(description="Named loss tables {type = NAME, weight = 1.0, ...params}.")


class WandbConfig(_Strict):
    """Weights & Biases logging (needs the `wandb` extra). An unset value is W&B's own: its
    environment (WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY, ...) and defaults; a value set here wins."""

    project: str | None = Field(default=None, description="W&B project; unset: WANDB_PROJECT, else 'wm-framework'.")
    entity: str | None = Field(default=None, description="W&B entity (user or team); unset: WANDB_ENTITY, else your default entity.")
    mode: Literal["online", "offline", "disabled"] | None = Field(default=None, description="W&B mode; unset: WANDB_MODE, else online. offline writes the run under <run>/wandb/ for `wandb sync`; disabled logs nothing.")
    group: str | None = Field(default=None, description="W&B group; unset: a sweep's runs are grouped under the sweep directory's name.")
    tags: list[str] | None = Field(default=None, description="W&B tags of the run.")


class ProbeCurveConfig(_Strict):
    """The learning curve measured during training (wm_framework/train/probe_curve.py)."""

    every: int = Field(default=250, ge=1, description="Measure every N optimiser steps (and at step 0, the random initialisation).")
    rows: int = Field(default=1500, ge=8, description="Frames in each fixed set: the training subset the ridge is fitted on, and the held-out set it is scored on.")


class ViewsConfig(_Strict):
    """Training-time pictures for models whose predictor returns observations (wm_framework/train/views.py)."""

    images: bool = Field(default=True, description="Write images/step_<step>.png: context frames | predicted next frame | true next frame, one row per window.")
    image_every: int | None = Field(default=None, ge=1, description="Image strip every N steps (and at the end); default: train.eval_every, one picture per validation instead of hundreds of files.")
    image_windows: int = Field(default=4, ge=1, description="Rows of the image strip: fixed windows of the validation split (the training split when there is none).")
    videos: bool = Field(default=True, description="At every validation write videos/rollout_step_<step>.mp4: open-loop rollouts, ground truth left, prediction right.")
    video_horizon: int = Field(default=16, ge=1, description="Open-loop steps in each rollout video (after the model's context frames).")
    video_windows: int = Field(default=4, ge=1, description="Rollouts in each video, one per row, from different episodes of the validation split.")


class TrainConfig(_Strict):
    """The one training loop's settings."""

    steps: Int | None = Field(default=None, ge=1, le=MAX_STEPS, description="Optimiser steps (set this or `epochs`).")
    epochs: float | None = Field(default=None, gt=0, description="Epochs over the training windows (steps = epochs * windows / batch_size).")
    batch_size: Int = Field(default=64, ge=1, le=10**6, description="Windows per optimiser step.")
    lr: float = Field(default=3e-4, gt=0, description="Peak learning rate (AdamW).")
    min_lr: float = Field(default=0.0, ge=0, description="Learning rate at the end of the cosine decay.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay, applied to >=2-D parameters only.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas.")
    warmup_fraction: float = Field(default=0.01, ge=0, le=1, description="Linear warm-up as a fraction of all steps.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip the global gradient norm to this (none: no clipping).")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto = bf16 autocast where the device runs bf16 natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX-BF16), fp32 otherwise.")
    compile: bool = Field(default=False, description="Wrap the model in torch.compile.")
    channels_last: bool = Field(default=False, description="Convert the model to channels-last (NHWC) memory format: faster convolutions on GPU tensor cores.")
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    eval_every: int = Field(default=500, ge=1, description="Validate every N steps (and at the end).")
    eval_batches: int = Field(default=8, ge=1, description="Validation batches per evaluation.")
    checkpoint_every: int = Field(default=1000, ge=1, description="Write checkpoints/last.pt every N steps.")
    checkpoint_epochs: list[float] = Field(default_factory=list, description="Also keep checkpoints at these epochs (epoch_<n>.pt) for probing.")
    log_every: int = Field(default=20, ge=1, description="Log metrics every N steps.")
    nan_policy: Literal["stop", "skip"] = Field(default="stop", description="On a NaN/Inf loss or gradient: stop (exit 1) or skip the step.")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice).")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"{list(v)}: each AdamW beta must lie in [0, 1)")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"{v!r} is not a device: auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("checkpoint_epochs")
    @classmethod
    def _positive_epochs(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not e > 0]
        if bad:
            raise ValueError(f"epochs must be > 0, got {bad}")
        return v
    tensorboard: bool = Field(default=True, description="Also log to TensorBoard (<run>/tensorboard) when it is installed: training scalars, image strips and videos, and every stage's results and plots.")
    wandb: WandbConfig | None = Field(default=None, description="Log to Weights & Biases (an empty [train.wandb] table turns it on): training metrics, the resolved recipe as config, stage results as tables and summary values, plots and videos as media.")
    probe_curve: ProbeCurveConfig | None = Field(default=None, description="Held-out ridge R^2 per label task and collapse diagnostics (predictor vs copy-last, dead dims, effective rank) every N steps, plotted into the report; off when absent.")
    views: ViewsConfig = Field(default_factory=ViewsConfig, description="Image strips and open-loop rollout videos while training, for models that predict observations (latent-only models get none).")


#: A sweep label becomes a directory name under the sweep (``sweep/<label>``): no separators,
#: no "." or "..", nothing Rich would read as markup.
SAFE_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,=+\-]{0,99}")


class SweepRun(_Strict):
    """One explicitly labelled run of a sweep."""

    label: str = Field(description="Run label: the directory name of the run inside the sweep (letters, digits and "
                                   "_ . , = + -; at most 100 characters; not starting with . or -).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides for this run.")

    @field_validator("label")
    @classmethod
    def _safe_label(cls, v: str) -> str:
        if not SAFE_LABEL.fullmatch(v):
            raise ValueError(f"{v!r} is not a safe directory name (letters, digits and _ . , = + - only, at most "
                             "100 characters, not starting with . or -)")
        return v


class SweepConfig(_Strict):
    """Expand one recipe into labelled runs."""

    grid: dict[str, list] = Field(default_factory=dict, description="Dotted key -> values; the cartesian product becomes runs.")
    runs: list[SweepRun] = Field(default_factory=list, description="Explicitly labelled runs (used instead of, or besides, the grid).")
    seeds: list[int] = Field(default_factory=list, description="Repeat every run once per seed (label suffix `_seed<s>`, "
                             "top-level `seed` overridden): the spread over seeds of each configuration.")
    after_stages: list[str] = Field(default_factory=list, description="Stages run once after all runs, with ctx.sweep_runs.")
    launcher: dict = Field(default_factory=lambda: {"type": "local"}, description="How the runs are executed: {type = NAME, ...params}; `local` runs them in sequence on CPU and spreads them over the visible GPUs (per_gpu runs each).")


CORE_SECTIONS = ("name", "description", "needs_gpu", "seed", "stages", "data", "model", "train", "sweep", "presets")


class Recipe(_Strict):
    """A whole recipe; plugin stage tables (e.g. [probe]) are validated by their stage."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Recipe name (run directories are named after it).")
    description: str = Field(default="", description="One line about what the recipe does.")
    seed: Seed = Field(default=0, description="Global seed (model init, sampling, probes).")
    stages: list[str] = Field(default_factory=lambda: ["data", "train"], description="Stages in order.")
    data: DataConfig | None = Field(default=None, description="Datasets.")
    model: ModelConfig | None = Field(default=None, description="Model composition.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop.")
    sweep: SweepConfig | None = Field(default=None, description="Sweep expansion.")
    needs_gpu: bool = Field(default=False, description="Whether the recipe at full size (no preset) needs a GPU to finish in reasonable time; shown by `wm recipes list`.")
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Named sets of dotted overrides: [presets.smoke], [presets.cpu], ...; `wm run R --preset NAME` (`--smoke` = `--preset smoke`).")

    @property
    def raw(self) -> dict:
        return getattr(self, "_raw", {})

    def stage_config(self, stage: str):
        """The validated config object (or dict) of a plugin stage's table."""
        return getattr(self, "_stage_configs", {}).get(stage)


# ----------------------------------------------------------------------------- loading
def load_toml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise WMUsageError(f"{p}: recipe file not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError([f"toml: {p.name}: {e}"]) from e
    except UnicodeDecodeError as e:
        raise RecipeError([f"toml: {p.name}: not UTF-8 text ({e.reason})"]) from e


def parse_value(text: str) -> Any:
    """Parse an override value as TOML (`3`, `1e-4`, `true`, `[1,2]`, `"x"`); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise WMUsageError(f"override '{item}': expected KEY=VALUE (e.g. train.steps=200)")
        key, value = item.split("=", 1)
        if not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[\w\-]+)*", key.strip()):
            raise WMUsageError(f"override '{item}': '{key}' is not a dotted key")
        out[key.strip()] = parse_value(value.strip())
    return out


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set a.b.c = value, creating tables on the way; list items by index (a.0.b)."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node or not isinstance(node[part], (dict, list)):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        try:
            set_dotted(data, key, value)
        except (IndexError, ValueError, TypeError) as e:
            raise RecipeError([f"{key}: cannot apply override ({e})"]) from e
    return data


def preset_names(data: dict) -> list[str]:
    """The presets a recipe declares, in file order."""
    presets = data.get("presets", {})
    return list(presets) if isinstance(presets, dict) else []


def apply_preset(data: dict, preset: str) -> dict:
    """The recipe with the dotted overrides of ``[presets.<preset>]`` applied."""
    presets = data.get("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise RecipeError(["presets: must hold tables of dotted overrides, [presets.NAME]"])
    if preset not in presets:
        known = ", ".join(presets) or "none"
        close = difflib.get_close_matches(preset, list(presets), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RecipeError([f"presets.{preset}: this recipe has no such preset{hint}; its presets: {known}"])
    return apply_overrides(data, presets[preset])


def resolve(data: dict, overrides: dict[str, Any] | None = None, smoke: bool = False,
            preset: str | None = None) -> dict:
    """The recipe dict with a preset's overrides (``--preset``; ``smoke=True`` means the
    ``smoke`` preset) and then the command-line overrides, which win."""
    if "smoke" in data and "presets" not in data:
        raise RecipeError(["smoke: the [smoke] table is now [presets.smoke] (rename the table header)"])
    if smoke and preset not in (None, "smoke"):
        raise WMUsageError(f"--smoke and --preset {preset}: choose one (--smoke means --preset smoke)")
    preset = preset or ("smoke" if smoke else None)
    if preset is not None:
        data = apply_preset(data, preset)
    return apply_overrides(data, overrides or {})


def validate_all_presets(data: dict, overrides: dict[str, Any] | None = None, registry=None) -> list[str]:
    """Validate the recipe as written and under every preset (each sweep run too); raise
    with every problem of every variant at once. A problem that only a preset causes is
    located inside that preset (``presets.cpu.train.stepz: unknown key``). Returns the
    variants checked."""
    base: list[str] = []
    extra: list[str] = []
    checked = []
    for preset in [None, *preset_names(data)]:
        try:
            resolved = resolve(data, overrides, preset=preset)
            validate(resolved, registry=registry)
            for _, sub in expand_sweep(resolved):
                validate(sub, registry=registry)
            checked.append(f"preset {preset}" if preset else "full size")
        except RecipeError as e:
            if preset is None:
                base += e.problems
            else:
                extra += [f"presets.{preset}.{p}" for p in e.problems if p not in base]
    if base or extra:
        raise RecipeError(list(dict.fromkeys(base + extra)))
    return checked


# ----------------------------------------------------------------------------- validation
def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "recipe"


def pydantic_problems(err: ValidationError, prefix: tuple = ()) -> list[str]:
    """One line per problem of a pydantic ValidationError: ``where.it.is: what is wrong``."""
    out = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            out.append(f"{_loc(loc)}: unknown key")
        elif e["type"] == "missing":
            out.append(f"{_loc(loc)}: missing required key")
        else:
            out.append(f"{_loc(loc)}: {e['msg']}")
    return out


def _add_did_you_mean(problems: list[str], data: dict) -> list[str]:
    """Turn 'a.b.stepz: unknown key' into '... (did you mean 'steps'?)' using the schema."""
    out = []
    for p in problems:
        m = re.match(r"^(.*)\.([^.]+): unknown key$", p) or re.match(r"^()([^.]+): unknown key$", p)
        if m:
            parent, key = m.group(1), m.group(2)
            model = _schema_at(parent)
            if model is not None:
                close = difflib.get_close_matches(key, list(model.model_fields), n=1)
                if close:
                    p = f"{p} (did you mean '{close[0]}'?)"
        out.append(p)
    return out


def _schema_at(path: str):
    model: Any = Recipe
    if not path:
        return model
    for part in path.split("."):
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        for cand in getattr(ann, "__args__", (ann,)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return None
    return model


def _check_component(registry, kind: str, table: Any, where: str, problems: list[str], extra_keys=("weight",)) -> None:
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table {{type = NAME, ...}}")
        return
    name = table.get("type")
    if not isinstance(name, str):
        problems.append(f"{where}.type: missing component name")
        return
    try:
        comp = registry.get(kind, name)
    except WMUsageError as e:
        problems.append(f"{where}.type: {e}")
        return
    params = {k: v for k, v in table.items() if k != "type" and k not in extra_keys}
    try:
        comp.check_params(params)
    except WMUsageError as e:
        problems.append(f"{where}: {e}")


def _component_problems(data: dict, registry, stage_names: set[str]) -> list[str]:
    """Check stage names and every component table against the registry (on the raw dict,
    so these problems are reported even when other sections fail the schema)."""
    problems: list[str] = []
    stages = data.get("stages", ["data", "train"])
    if isinstance(stages, list):
        for i, stage in enumerate(stages):
            if isinstance(stage, str) and stage not in stage_names:
                close = difflib.get_close_matches(stage, sorted(stage_names), n=1)
                problems.append(f"stages.{i}: unknown stage '{stage}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                                + f"; registered: {', '.join(sorted(stage_names))}")
    sweep = data.get("sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("after_stages"), list):
        for i, stage in enumerate(sweep["after_stages"]):
            if stage not in stage_names:
                problems.append(f"sweep.after_stages.{i}: unknown stage '{stage}'")
    model = data.get("model")
    if isinstance(model, dict):
        if "encoder" in model:
            _check_component(registry, "encoders", model["encoder"], "model.encoder", problems)
        if "predictor" in model:
            _check_component(registry, "predictors", model["predictor"], "model.predictor", problems)
        losses = model.get("losses")
        if isinstance(losses, dict):
            for lname, table in losses.items():
                _check_component(registry, "losses", table, f"model.losses.{lname}", problems)
                if isinstance(table, dict) and not isinstance(table.get("weight", 1.0), (int, float)):
                    problems.append(f"model.losses.{lname}.weight: must be a number")
    dcfg = data.get("data")
    if isinstance(dcfg, dict):
        for sect in ("collect", "collect_test"):
            cfg = dcfg.get(sect)
            if not isinstance(cfg, dict):
                continue
            if "env" in cfg:
                _check_component(registry, "envs", cfg["env"], f"data.{sect}.env", problems, extra_keys=())
            if isinstance(cfg.get("policies"), list):
                for j, pol in enumerate(cfg["policies"]):
                    # `name` labels the policy's episodes in the store (collect.policy_label)
                    _check_component(registry, "policies", pol, f"data.{sect}.policies.{j}", problems, extra_keys=("name",))
    return problems


def validate(data: Any, registry=None, check_components: bool = True) -> Recipe:
    """Validate a resolved recipe dict; raise RecipeError with every problem at once."""
    if not isinstance(data, dict):
        raise RecipeError(["recipe: expected a TOML table"])
    problems: list[str] = []
    if registry is None and check_components:
        from wm_framework.plugins import get_registry

        registry = get_registry()
    core = {k: v for k, v in data.items() if k in CORE_SECTIONS}
    recipe = None
    try:
        recipe = Recipe.model_validate(core)
    except ValidationError as e:
        problems += pydantic_problems(e)

    stage_configs: dict[str, Any] = {}
    stage_names = set(registry.names("stages")) if registry is not None else set()
    for key, value in data.items():
        if key in CORE_SECTIONS:
            continue
        if key in stage_names:
            comp = registry.get("stages", key)
            config_model = resolved(comp.meta.get("config"))  # lazy("module:Config") imported
            if config_model is not None:
                try:
                    stage_configs[key] = config_model.model_validate(value)
                except ValidationError as e:
                    problems += pydantic_problems(e, (key,))
            else:
                stage_configs[key] = value
            continue
        if registry is None:  # no registry to ask: plugin stage tables are taken as they are
            stage_configs[key] = value
            continue
        close = difflib.get_close_matches(key, list(CORE_SECTIONS) + sorted(stage_names), n=1)
        problems.append(f"{key}: unknown section" + (f" (did you mean '{close[0]}'?)" if close else ""))

    if registry is not None and check_components:
        problems += _component_problems(data, registry, stage_names)
    if recipe is not None:
        if "data" in recipe.stages and recipe.data is None:
            problems.append("data: stage 'data' needs a [data] section")
        if "train" in recipe.stages and recipe.model is None:
            problems.append("model: missing section (the 'train' stage needs it)")
        if "train" in recipe.stages and recipe.data is None:
            problems.append("data: missing section (the 'train' stage needs it)")
        if "train" in recipe.stages and recipe.train.steps is None and recipe.train.epochs is None:
            problems.append("train.steps: set train.steps or train.epochs")
    if problems:
        raise RecipeError(_add_did_you_mean(problems, data))
    assert recipe is not None
    object.__setattr__(recipe, "_raw", data)
    object.__setattr__(recipe, "_stage_configs", stage_configs)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | dict | None = None, smoke: bool = False, registry=None,
                preset: str | None = None) -> Recipe:
    """Load, resolve (preset + overrides) and validate a recipe file."""
    data = load_toml(path)
    ov = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    return validate(resolve(data, ov, smoke, preset), registry=registry)


# ----------------------------------------------------------------------------- sweeps
def _label_value(v: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(v)).strip("-.") or "x"


def expand_sweep(data: dict) -> list[tuple[str, dict]]:
    """[(label, resolved recipe dict)] for each run of the sweep (one unlabelled run without one)."""
    sweep = data.get("sweep")
    if not sweep:
        return [("", data)]
    base = {k: v for k, v in data.items() if k != "sweep"}
    runs: list[tuple[str, dict]] = []
    grid = sweep.get("grid", {}) or {}
    if grid:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            label = ",".join(f"{_label_value(k.split('.')[-1])}={_label_value(v)}" for k, v in zip(keys, values))
            runs.append((label, apply_overrides(base, dict(zip(keys, values)))))
    for run in sweep.get("runs", []) or []:
        runs.append((run["label"], apply_overrides(base, run.get("overrides", {}))))
    seeds = sweep.get("seeds", []) or []
    if seeds:
        runs = [(f"{label}_seed{s}", {**recipe, "seed": int(s)}) for label, recipe in runs for s in seeds]
    labels = [label for label, _ in runs]
    dupes = {x for x in labels if labels.count(x) > 1}
    if dupes:
        raise RecipeError([f"sweep.runs: duplicate labels {sorted(dupes)}"])
    return runs
