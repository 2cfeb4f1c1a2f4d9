"""The ``[probe]`` table: which labels are read from which features, how far ahead.

Offsets are in **env steps** (raw store rows), never in window frames. A window's
frames are ``data.frameskip`` env steps apart, so "the next frame of the window" and
"the next env step" are different things as soon as frameskip > 1, and a persistence
baseline scores very differently over the two (measured on an Atari store, heuristic +
random_active data: static ball_pos R^2 0.97 over 1 step, 0.36 over 5). Every task
therefore names its offset in env steps, and the report prints it.

Two gaps matter:

- the **protocol gap** (``protocol_gap``, default 1 env step): what the published
  published probing study calls "t+1"; its static baselines (ball_pos 0.955, ball_vel
  0.821) are reproduced by a 1-step gap and by no other (docs/probes.md);
- the **model gap** (``data.frameskip`` env steps): how far ahead the world model's
  predictor looks. With ``model_gap = true`` every task with a nonzero offset, and the
  static baseline, is also reported at this gap when it differs.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wm_framework.errors import WMUsageError

FEATURE_KINDS = ("encoder", "predictor", "encoder+action")
BASELINES = ("static", "random_init", "patch_mean", "raw_pixels")


class ProbeTask(BaseModel):
    """One probing task: which features, which labels, how many env steps after the probed frame."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name (results and report rows); matching a reference task name adds the published numbers.")
    features: Literal["encoder", "predictor", "encoder+action"] = Field(
        default="encoder",
        description="'encoder': encoder features at frame t; 'predictor': predictor output at t (it predicts the next "
        "window frame, data.frameskip env steps ahead); 'encoder+action': encoder features at t joined with the float "
        "action block taken at t.")
    targets: list[str] = Field(min_length=1, description="Store labels (labels/<name>) to regress, e.g. ['ball_x', 'ball_y'].")
    offset: int = Field(
        default=0, ge=0,
        description="Env steps (store rows) from the probed frame t to the labels regressed: 0 = the labels at t, "
        "1 = the next recorded step. Not window frames: with data.frameskip = 5 the next window frame is offset 5.")

    @model_validator(mode="before")
    @classmethod
    def _shift_was_renamed(cls, data: Any) -> Any:
        # `shift` counted window frames, which silently meant 5 env steps under frameskip 5.
        if isinstance(data, dict) and "shift" in data:
            raise ValueError("`shift` (window frames) is now `offset` (env steps): with data.frameskip = F, "
                             "shift = 1 is offset = F; a published protocol's t+1 is usually offset = 1")
        return data


class ProbeReference(BaseModel):
    """Published figures printed next to ours, only where the protocol matches (``[probe.reference]``,
    or the reference a task preset carries). Recipe data, like ``[eval.reference]``."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="published", description="Where the figures come from (a column header).")
    offsets: dict[str, int] = Field(
        default_factory=dict, description="Env-step offset of each published task: a figure is shown as comparable "
        "only beside a task probed at this offset.")
    static_gap: int = Field(default=1, ge=1, description="Env steps of the published static baseline's t -> t+gap copy.")
    r2: dict[str, dict[str, dict[int, float] | str]] = Field(
        default_factory=dict, description="Test R^2 by probe type, then task: {epoch: value} (a curve) or a "
        "sentence (e.g. '< 0').")
    static: dict[str, float] = Field(default_factory=dict, description="Published static-baseline R^2 by task.")
    random_init: dict[str, float] = Field(default_factory=dict, description="Published random-encoder R^2 by task.")


def task_preset(name: str) -> tuple[list[ProbeTask], ProbeReference | None]:
    """A registered probing-task preset (``register_probe_presets``): its tasks and published figures."""
    from wm_framework.plugins import get_registry

    preset = get_registry().create("probe_presets", name)
    tasks = [ProbeTask(**t) for t in preset["tasks"]]
    ref = preset.get("reference")
    return tasks, (None if ref is None else ProbeReference(**ref))


def default_tasks_for_labels(label_names: Sequence[str], frameskip: int = 1) -> list[ProbeTask]:
    """Tasks when a recipe names none: each label from the encoder at t, and from the
    predictor at the frame it predicts (``frameskip`` env steps ahead)."""
    tasks = []
    for name in label_names:
        tasks.append(ProbeTask(name=name, features="encoder", targets=[name], offset=0))
        tasks.append(ProbeTask(name=f"{name}_pred", features="predictor", targets=[name], offset=int(frameskip)))
    return tasks


def model_gap_variants(tasks: Sequence[ProbeTask], frameskip: int) -> list[ProbeTask]:
    """Each task with a nonzero offset other than ``frameskip``, again at offset ``frameskip``.

    The variant is named ``<name>@<frameskip>``, so it never picks up published numbers
    measured at another gap.
    """
    names = {t.name for t in tasks}
    out = []
    for t in tasks:
        name = f"{t.name}@{frameskip}"
        if t.offset > 0 and t.offset != frameskip and name not in names:
            out.append(t.model_copy(update={"name": name, "offset": int(frameskip)}))
    return out


class ProbeConfig(BaseModel):
    """The recipe's ``[probe]`` table: tasks, probe types, baselines, gaps, checkpoints, data caps."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[ProbeTask] | str | None = Field(
        default=None,
        description="Tasks as a list of {name, features, targets, offset}; or the name of a registered preset "
        "(`wm components list --kind probe_presets`; plugins register them); omitted: every store label from the "
        "encoder (offset 0) and the predictor (offset data.frameskip).")
    reference: ProbeReference | None = Field(
        default=None, description="Published figures to print beside ours; default: those of the task preset, if any.")
    probes: list[str] = Field(default_factory=lambda: ["mlp", "linear"], description="Registered probe names to fit on every task.")
    probe_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Extra factory parameters per probe name, e.g. {mlp = {max_epochs = 50}}.")
    baselines: list[Literal["static", "random_init", "patch_mean", "raw_pixels"]] = Field(
        default_factory=lambda: ["static", "random_init", "patch_mean", "raw_pixels"],
        description="'static': the label at t copied as the label at t + gap (gap = the task's offset, or "
        "protocol_gap for offset-0 tasks); 'random_init': the same architecture freshly initialised; 'patch_mean': "
        "patch-token mean instead of CLS (encoders with a `pooling` attribute); 'raw_pixels': ridge on downsampled "
        "grey frames (raw state vectors for state stores).")
    protocol_gap: int = Field(
        default=1, ge=1,
        description="Env steps of the published protocol's 't+1': the static baseline of offset-0 tasks copies the "
        "label at t as the label at t + protocol_gap. 1 reproduces the published static baselines (docs/probes.md).")
    model_gap: bool = Field(
        default=True,
        description="Also report tasks with a nonzero offset, and the static baseline, at the world model's own gap "
        "(data.frameskip env steps) when that differs: rows '<task>@<frameskip>' and a second static column.")
    checkpoints: Literal["all", "last"] | list[str] = Field(
        default="all", description="Checkpoints to probe: 'all', 'last', or labels such as ['epoch_1', 'epoch_10'].")
    use_test_store: bool = Field(
        default=True, description="Evaluate on the recipe's `test` store when it has one (else on the `holdout` "
        "split, else on `val`; the report names the split used).")
    overlap: bool = Field(
        default=True, description="Count the evaluation windows that also occur, bit for bit, in the training "
        "split (one hash pass over both) and print it in the report.")
    window: int | None = Field(default=None, ge=2, description="Frames per probing window; default: the recipe's data.window.")
    frame: int | None = Field(default=None, ge=0, description="Index t of the probed frame in the window; default window-2 (the last context frame).")
    max_train_rows: int = Field(default=20000, ge=2, description="Cap on training-split windows used to fit probes.")
    max_eval_rows: int = Field(default=10000, ge=2, description="Cap on windows per evaluation split (val, test).")
    batch_size: int = Field(default=64, ge=1, description="Windows per batch during feature extraction.")
    raw_pixels_size: list[int] = Field(default_factory=lambda: [32, 40], min_length=2, max_length=2,
                                       description="Height and width of the grey frames of the raw-pixel baseline.")
    bootstrap: int = Field(
        default=200, ge=0,
        description="Bootstrap resamples for the 95% interval of every R^2 (episodes resampled when known, else "
        "rows); 0 turns intervals off.")
    seed: int = Field(default=0, description="Seed of every probe (initialisation and minibatch order) and of the bootstrap.")

    @field_validator("tasks")
    @classmethod
    def _preset_is_registered(cls, v):
        if isinstance(v, str):
            from wm_framework.plugins import get_registry

            known = get_registry().names("probe_presets")
            if v not in known:
                raise ValueError(f"unknown probe preset '{v}'; registered: {', '.join(known) or '(none)'}")
        return v

    @field_validator("probes")
    @classmethod
    def _probes_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one probe is needed")
        return v

    def resolved_tasks(self, label_names: Sequence[str] | None = None, frameskip: int = 1) -> list[ProbeTask]:
        """The task list with presets expanded and, with ``model_gap``, the model-gap
        variants appended; checks target names when the labels are known."""
        if self.tasks is None:
            if label_names is None:
                raise WMUsageError("probe.tasks: not set and the store's labels are unknown")
            tasks = default_tasks_for_labels(label_names, frameskip)
        elif isinstance(self.tasks, str):
            tasks = task_preset(self.tasks)[0]
        else:
            tasks = list(self.tasks)
        if not tasks:
            raise WMUsageError("probe.tasks: no tasks (the store has no labels/<name> arrays?)")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise WMUsageError(f"probe.tasks: duplicate task names in {names}")
        if label_names is not None:
            known = set(label_names)
            for t in tasks:
                missing = [x for x in t.targets if x not in known]
                if missing:
                    raise WMUsageError(f"probe task '{t.name}': unknown label(s) {missing}; "
                                       f"the store has: {', '.join(sorted(known)) or '(none)'}")
        if self.model_gap:
            tasks += model_gap_variants(tasks, frameskip)
        return tasks

    def resolved_reference(self) -> ProbeReference | None:
        """``reference`` if given, else the task preset's published figures, else None."""
        if self.reference is not None:
            return self.reference
        return task_preset(self.tasks)[1] if isinstance(self.tasks, str) else None
