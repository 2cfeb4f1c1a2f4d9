"""Run directories and the RunContext every stage receives.

Layout (contract): ``runs/<timestamp>_<recipe>/`` with ``recipe.resolved.toml``,
``metrics.jsonl``, ``checkpoints/``, ``report.md``, ``results.json``, ``plots/``,
``videos/``. A RunContext rebuilds everything from the directory alone, so
``wm probe RUN_DIR`` and ``wm eval RUN_DIR`` work long after training.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from wm_framework.errors import WMUsageError
from wm_framework.safety import check_contained, confined_path
from wm_framework.recipe import Recipe, load_toml, validate
from wm_framework.atomic import atomic_directory, atomic_write_json, atomic_write_text, remove_stale_creations
from wm_framework.runs.model_building import build_world_model, compute_data_params

DATA_PARAMS_FILE = "model_context.json"  # the data parameters; the file keeps its first name so older runs load
# Report sections appear in this order; unknown keys follow in insertion order.
SECTION_ORDER = ["summary", "data", "train", "learning_curve", "probe", "eval", "plan", "surprise", "straightness", "sweep"]


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    epoch: float
    label: str


def new_run_dir(name: str, parent: str | Path = "runs", populate: Callable[[Path], None] | None = None) -> Path:
    """Create ``<parent>/<timestamp>_<name>`` with ``populate(dir)`` run inside it first.

    The directory appears only once ``populate`` has written it (``atomic_directory``), so
    a kill at any instant leaves no run, or a run that ``--resume`` can open.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = Path(parent)
    base = parent / f"{stamp}_{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}"
    # Leftovers of killed run creations (they take milliseconds): only run-directory names,
    # so that a store being built in the same folder is never touched.
    remove_stale_creations(parent / "????????-??????_*", older_than_s=600)
    for i in range(1, 10_000):
        path = base if i == 1 else Path(f"{base}-{i - 1}")
        if path.exists():
            continue
        try:
            with atomic_directory(path) as tmp:
                if populate is not None:
                    populate(tmp)
            return path
        except OSError:
            if not path.exists():  # lost a race with a run started in the same second: next name
                raise
    raise WMUsageError(f"{parent}: too many runs named {base.name}")


class RunContext:
    """A run directory plus the validated recipe; lazily opens stores and builds models."""

    def __init__(self, path: str | Path, recipe: Recipe, device: str | None = None):
        self.path = Path(path)
        self.recipe = recipe
        self._device_name = device or recipe.train.device
        self._stores: dict | None = None
        self._splits: dict | None = None
        self.sweep_runs: list[tuple[str, "RunContext"]] = []
        self.label = ""
        self.resume = False  # continue training from checkpoints/last.pt
        self.progress = True  # progress bars and stage lines (off on ranks other than 0)
        self._tracker = None  # TensorBoard / W&B, opened on first use (see `tracker`)

    # -- paths ------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def plots_dir(self) -> Path:
        d = self.path / "plots"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def videos_dir(self) -> Path:
        d = self.path / "videos"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def device(self):
        import torch

        name = self._device_name
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(name)

    # -- data -------------------------------------------------------------------------
    def stores(self) -> dict:
        if self._stores is None:
            from wm_framework.data.store import EpisodeStore

            if self.recipe.data is None:
                raise WMUsageError("data: this recipe has no [data] section")
            from wm_framework.runs.store_paths import record_store_paths

            # Opened from here, so here is what the recipe's relative paths meant. Recorded
            # first: recording points the context at the absolute paths (and resets _stores).
            record_store_paths(self)
            data = self.recipe.data
            test = EpisodeStore.open(data.test) if data.test and _exists(data.test) else None
            self._stores = {"train": EpisodeStore.open(data.train), "test": test}
        return self._stores

    def use_stores(self, train: str | None = None, test: str | None = None) -> None:
        """Read other train / test stores in this context only (``--data`` / ``--test-data``)."""
        from wm_framework.runs.store_paths import use_stores

        use_stores(self, train, test)

    def splits(self) -> dict:
        if self._splits is None:
            from wm_framework.data.sampler import split_episodes

            d = self.recipe.data
            self._splits = split_episodes(self.stores()["train"], val_fraction=d.val_fraction,
                                          seed=d.split_seed, holdout_policies=tuple(d.holdout_policies))
        return self._splits

    def resolve_split(self, split: str) -> tuple[str, str]:
        """(the split that ``sampler(split)`` really reads, a truthful one-line name for reports).

        "test" is the test store when the recipe has one, else the holdout split, else the
        validation split; the last is no held-out figure (it picked the best checkpoint),
        and the name says so.
        """
        if split == "test" and self.stores()["test"] is not None:
            return "test", f"test store {self.recipe.data.test}"
        if split == "test":
            split = "holdout" if len(self.splits()["holdout"]) else "val"
        if split == "holdout":
            policies = ", ".join(self.recipe.data.holdout_policies) or "none"
            return "holdout", f"holdout split (policies never trained on: {policies})"
        if split == "val":
            return "val", ("val split (no test store and no holdout policies; the same episodes chose the best "
                           "checkpoint, so this is not a held-out figure)")
        return split, f"{split} split"

    def sampler(self, split: str, length: int | None = None, labels=None):
        """WindowSampler over a split: train | val | holdout | test (the test store, else holdout,
        else val: see :meth:`resolve_split` for the name to report)."""
        from wm_framework.data.sampler import WindowSampler
        import numpy as np

        d = self.recipe.data
        length = length or d.window
        if split == "test":
            split = self.resolve_split("test")[0]
        if split == "test":
            test = self.stores()["test"]
            return WindowSampler(test, np.arange(test.num_episodes), length, d.frameskip, mode=d.mode, labels=labels)
        if split not in self.splits():
            raise WMUsageError(f"unknown split '{split}'; splits: train, val, holdout, test")
        return WindowSampler(self.stores()["train"], self.splits()[split], length, d.frameskip, mode=d.mode, labels=labels)

    def episode(self, split: str = "test", index: int = 0) -> dict:
        """Episode ``index`` of ``split`` as the model sees it, NumPy in the store's layout:
        every ``frameskip``-th frame (``obs`` ``[T, ...]``), the raw actions from each
        (``action`` ``[T, frameskip, ...]``), ``labels/<name>`` ``[T]``; what
        ``WorldModel.encode_numpy`` / ``predict_numpy`` / ``rollout_numpy`` take."""
        from wm_framework.data.sampler import WindowSampler

        sampler = self.sampler(split, 1)
        if not -len(sampler.episodes) <= index < len(sampler.episodes):
            raise WMUsageError(f"episode {index}: split '{split}' has {len(sampler.episodes)} episodes")
        ep = int(sampler.episodes[index])
        fs = self.recipe.data.frameskip
        length = (int(sampler.store.episode_lengths[ep]) - 1) // fs + 1  # every frame the model can see
        whole = WindowSampler(sampler.store, [ep], length, fs, mode="ram")
        return {k: v for k, v in whole[0].items() if k not in ("episode", "t0")}

    # -- models -----------------------------------------------------------------------
    def data_params(self) -> dict:
        """Shapes and statistics passed to factories that ask for them (saved with the run)."""
        f = self.path / DATA_PARAMS_FILE
        if f.is_file():
            return json.loads(f.read_text())
        params = compute_data_params(self.recipe, self.stores()["train"], self.splits()["train"])
        atomic_write_json(f, params)
        return params

    def build_model(self, train: bool = False):
        """The recipe's WorldModel with fresh weights (seeded), on CPU; eval mode unless ``train``."""
        import torch

        torch.manual_seed(self.recipe.seed)
        model = build_world_model(self.recipe, self.data_params())
        return model.train(train)

    def load_model(self, checkpoint: str | Path = "last", device=None):
        """The WorldModel with weights from a checkpoint ("last", "best", a label or a path), eval mode."""
        from wm_framework.train.checkpoint import load_model_weights, load_state_dict_strict

        path = self.checkpoint_path(checkpoint)
        weights = load_model_weights(path)  # a .pt checkpoint (weights_only) or .safetensors weights
        model = build_world_model(self.recipe, self.data_params())
        load_state_dict_strict(model, weights, str(path))
        return model.to(device or "cpu").eval()

    def checkpoint_path(self, checkpoint: str | Path) -> Path:
        p = Path(checkpoint)
        if p.suffix in (".pt", ".safetensors") and p.is_file():
            return p
        infos = self.checkpoints()
        for info in infos:
            if info.label == str(checkpoint):
                return info.path
        # Not in the index (a run that stopped before writing it): the file by its label,
        # safetensors weights first, then a checkpoint written before them.
        for cand in (self.checkpoints_dir / f"{checkpoint}.safetensors", self.checkpoints_dir / f"{checkpoint}.pt"):
            if cand.is_file() and "/" not in str(checkpoint):
                return cand
        have = ", ".join(c.label for c in infos) or "(none)"
        raise WMUsageError(f"{self.path}: no checkpoint '{checkpoint}'; have: {have}")

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint of the run with its step and epoch, sorted by step."""
        index = self.checkpoints_dir / "index.json"
        if not index.is_file():
            return []
        try:
            entries = json.loads(index.read_text())
            files = [(e, Path(confined_path(self.checkpoints_dir, e["file"], f"{index}: checkpoint file")))
                     for e in entries]
            out = [CheckpointInfo(f, int(e["step"]), float(e["epoch"]), str(e["label"])) for e, f in files if f.is_file()]
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise WMUsageError(f"{index} is malformed ({type(err).__name__}: {err})".splitlines()[0]) from err
        return sorted(out, key=lambda c: (c.step, c.label))

    # -- results and report -----------------------------------------------------------
    def results(self) -> dict:
        f = self.path / "results.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def update_results(self, key: str, value: Any) -> None:
        """Record a stage's results in results.json, and send them to the run's trackers."""
        res = self.results()
        res[key] = value
        atomic_write_json(self.path / "results.json", res)
        self.tracker.log_results(key, value)

    @property
    def tracker(self):
        """The run's TensorBoard / W&B tracker (``runs/trackers.py``), opened on first use."""
        if self._tracker is None:
            from wm_framework.runs.trackers import open_tracker

            self._tracker = open_tracker(self)
        return self._tracker

    def close_tracker(self, failed: bool = False) -> None:
        if self._tracker is not None:  # finishes the W&B run; a later use opens it again
            self._tracker.close(failed)
            self._tracker = None

    def write_report_section(self, key: str, title: str, markdown: str) -> None:
        sections_file = self.path / ".report_sections.json"
        sections = json.loads(sections_file.read_text()) if sections_file.is_file() else {}
        sections[key] = {"title": title, "markdown": markdown}
        atomic_write_json(sections_file, sections)
        order = sorted(sections, key=lambda k: (SECTION_ORDER.index(k) if k in SECTION_ORDER else len(SECTION_ORDER)))
        head = f"# {self.recipe.name}" + (f" — {self.label}" if self.label else "") + "\n\n"
        if self.recipe.description:
            head += self.recipe.description + "\n\n"
        body = "\n\n".join(f"## {sections[k]['title']}\n\n{sections[k]['markdown'].strip()}" for k in order)
        atomic_write_text(self.path / "report.md", head + body + "\n")
        # A section ends a stage: its new plots and videos go to the trackers, if open (results
        # were recorded here); a section alone (a sweep's summary of its runs) opens no W&B run.
        if self._tracker is not None:
            self._tracker.log_new_media()


def _exists(path: str) -> bool:
    return "://" in path or Path(path).exists()


def load_run(run_dir: str | Path, device: str | None = None) -> RunContext:
    """Open an existing run directory (for `wm probe`, `wm eval`, notebooks)."""
    path = Path(run_dir)
    rfile = path / "recipe.resolved.toml"
    if not rfile.is_file():
        raise WMUsageError(f"{path}: not a run directory (no recipe.resolved.toml)")
    # A planted symlink would redirect appends and checkpoint writes. wandb/ is W&B's own folder
    # (its service links its log there from its cache); nothing here reads or writes in it.
    check_contained(path, "run directory", skip=("wandb",))
    recipe = validate(load_toml(rfile))
    ctx = RunContext(path, recipe, device=device)
    from wm_framework.runs.store_paths import apply_store_paths

    apply_store_paths(ctx)  # the absolute store paths recorded by `wm run`: works from any directory
    meta = path / "run.json"
    if meta.is_file():
        ctx.label = json.loads(meta.read_text()).get("label", "")
    return ctx
