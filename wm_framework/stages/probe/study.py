"""The probing study: every checkpoint x task x probe, the baselines, and the stage glue.

``probe_study`` works on plain objects (model loaders, samplers, probe factories) so
it is testable without a run directory; ``run_probe_stage`` wires it to a
``RunContext`` and writes ``probes.json``, ``results.json["probes"]``, the report
section and ``plots/probe_r2.png`` (tables and plot: ``tables.py``).

Features are extracted once per checkpoint (one pass per split, all tasks share
it); then every probe is fitted on every task. Baselines go through the same code:

- ``static``: the label at t copied as the label at t + gap, gap = the task's offset
  (``protocol_gap`` env steps for offset-0 tasks) and, as a second column, the
  model's own gap (``data.frameskip`` env steps),
- ``random_init``: the same architecture freshly initialised,
- ``patch_mean``: the last checkpoint with ``encoder.features(obs, pooling="mean")`` (encoder tasks),
- ``raw_pixels``: ridge regression on downsampled grey frames (raw states for state stores).

Every R^2 carries n (rows and episodes) and a bootstrap 95% interval (``stats``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from wm_framework.console import get_logger
from wm_framework.errors import WMUsageError
from wm_framework.stages.probe.probes import ProbeConfig, ProbeTask, make_linear_probe, make_mlp_probe, make_ridge_probe
from wm_framework.stages.probe.features import FeatureSet, extract_features, persistence_rows, resolve_frame, task_rows
from wm_framework.stages.probe.stats import score
# Re-exported: the tables and the plot used to live in this module.
from wm_framework.stages.probe.tables import plot_r2_vs_epoch, report_markdown, summarize

BUILTIN_PROBES = {"linear": make_linear_probe, "mlp": make_mlp_probe, "ridge": make_ridge_probe}
EVAL_SPLITS = ("val", "test")


def fit_task_probes(feats: dict[str, FeatureSet], tasks: Sequence[ProbeTask], probe_factories: dict[str, Callable],
                    matrix: Callable[[FeatureSet, str], np.ndarray] | None = None, n_boot: int = 200,
                    seed: int = 0, on_fit: Callable[[str, str], None] | None = None) -> dict:
    """Fit each probe on each task (train split, early stopping on val); R^2 on val and test.

    ``matrix(fs, kind)`` picks the feature matrix (default ``fs.matrix``; the raw-pixel
    baseline passes ``fs.raw_matrix``). ``on_fit(task, probe)`` is called after each fit
    (progress). Returns ``{task: {probe: {"fit", "val", "test"}}}``.
    """
    pick = matrix or (lambda fs, kind: fs.matrix(kind))
    out: dict[str, Any] = {}
    for task in tasks:
        rows = {split: task_rows(fs, task, pick(fs, task.features)) for split, fs in feats.items()}
        x_tr, y_tr, _ = rows["train"]
        if len(y_tr) < 2:
            out[task.name] = {"skipped": "fewer than 2 training rows with finite targets"}
            for name in probe_factories:
                if on_fit is not None:
                    on_fit(task.name, name)
            continue
        x_va, y_va, _ = rows.get("val", (None, None, None))
        per_probe = {}
        for name, factory in probe_factories.items():
            probe = factory()
            entry: dict[str, Any] = {"fit": probe.fit(x_tr, y_tr, x_va, y_va)}
            for split in EVAL_SPLITS:
                if split in rows:
                    x, y, groups = rows[split]
                    entry[split] = score(y, probe.predict(x), task.targets, groups, n_boot, seed) if len(y) else None
            per_probe[name] = entry
            if on_fit is not None:
                on_fit(task.name, name)
        out[task.name] = per_probe
    return out


def static_gap(task: ProbeTask, protocol_gap: int) -> int:
    """Env steps the static baseline copies across: the task's offset, or the protocol's t+1."""
    return task.offset if task.offset > 0 else protocol_gap


def static_baseline(feats: dict[str, FeatureSet], tasks: Sequence[ProbeTask], protocol_gap: int = 1,
                    gap: int | None = None, n_boot: int = 200, seed: int = 0) -> dict:
    """R^2 of copying the label at t as the label at t + gap, per task and eval split.

    ``gap`` None: each task's own (:func:`static_gap`); an int: that gap for every task.
    """
    out = {}
    for task in tasks:
        g = static_gap(task, protocol_gap) if gap is None else gap
        entry: dict[str, Any] = {"gap": g}
        for split in EVAL_SPLITS:
            if split in feats:
                truth, pred, groups = persistence_rows(feats[split], task, g)
                entry[split] = score(truth, pred, task.targets, groups, n_boot, seed)
        out[task.name] = entry
    return out


def probe_study(checkpoints: Sequence[dict], samplers: dict, tasks: Sequence[ProbeTask],
                probe_factories: dict[str, Callable], *, window: int, frame: int | None = None,
                baselines: Sequence[str] = (), random_model: Callable | None = None, batch_size: int = 64,
                max_rows: dict[str, int] | None = None, raw_size: tuple[int, int] = (32, 40), device=None,
                protocol_gap: int = 1, model_gap: int | None = None, n_boot: int = 200, seed: int = 0,
                reference: dict | None = None, log: Callable[[str], None] = lambda msg: None,
                progress: bool = False) -> dict:
    """Run the whole study on plain objects.

    Args:
        checkpoints: ``[{"label", "step", "epoch", "load": () -> WorldModel}]`` in training order.
        samplers: ``{"train", "val", "test"} -> object with iter_batches(batch_size)``.
        tasks: the probing tasks (offsets in env steps).
        probe_factories: name -> zero-argument callable building a fresh probe.
        window, frame: window length L and probed frame t (default L-2).
        baselines: subset of static, random_init, patch_mean, raw_pixels.
        random_model: () -> freshly initialised WorldModel (for random_init).
        max_rows: per-split caps on windows.
        protocol_gap: env steps of the published "t+1" (the static baseline of offset-0 tasks).
        model_gap: the world model's own gap in env steps (data.frameskip): a second static
            column when it differs from the protocol gap; None: no second column.
        n_boot, seed: bootstrap resamples and seed of every R^2 interval.
        reference: published figures (``ProbeReference`` as JSON) for the report, or None.
        log: one line per step of the study (feature passes, baselines).
        progress: show a bar over every (checkpoint or baseline) x task x probe fit.
    """
    from wm_framework.console import Progress

    frame = resolve_frame(window, frame)
    kinds = {t.features for t in tasks}
    caps = max_rows or {}
    second_static = "static" in baselines and model_gap is not None and model_gap != protocol_gap
    reach = [t.offset for t in tasks]
    if "static" in baselines:
        reach += [static_gap(t, protocol_gap) for t in tasks] + ([model_gap] if second_static else [])
    max_offset = max(reach, default=0)
    result: dict[str, Any] = {"window": window, "frame": frame, "tasks": [t.model_dump() for t in tasks],
                              "gaps": {"protocol": protocol_gap, "model": model_gap},
                              "probes": list(probe_factories), "checkpoints": [], "baselines": {}, "notes": [],
                              "reference": reference}

    def features(model, kinds_, pooling=None, raw=False) -> dict[str, FeatureSet]:
        return {split: extract_features(model, s, kinds_, frame, window, batch_size=batch_size, max_rows=caps.get(split),
                                        device=device, pooling=pooling, raw_size=raw_size if raw else None,
                                        max_offset=max_offset)
                for split, s in samplers.items()}

    # The bar counts probe fits: tasks x probes per checkpoint and per model baseline, tasks
    # for the raw-pixel ridge; the feature passes between them are announced by `log`.
    fits = len(tasks) * len(probe_factories) * (len(checkpoints) + ("random_init" in baselines and random_model is not None))
    fits += len(tasks) * ("raw_pixels" in baselines)
    if "patch_mean" in baselines and checkpoints:  # at most; skipped when the encoder has no mean pooling
        fits += len([t for t in tasks if t.features != "predictor"]) * len(probe_factories)
    bar = Progress(fits, 0, "probe", enabled=progress and fits > 0, unit="fit")
    done = [0]

    def fit(feats, tasks_, factories=None, matrix=None, what=""):
        def on_fit(task: str, probe: str) -> None:
            done[0] += 1
            bar.update(min(done[0], fits), f"{what}: {task} / {probe}")
        return fit_task_probes(feats, tasks_, factories or probe_factories, matrix, n_boot, seed, on_fit)

    def label_baselines(feats) -> None:
        """Baselines that need no model: static persistence and the raw-pixel ridge probe."""
        if "static" in baselines:
            result["baselines"]["static"] = static_baseline(feats, tasks, protocol_gap, None, n_boot, seed)
        if second_static:
            result["baselines"]["static_model_gap"] = static_baseline(feats, tasks, protocol_gap, model_gap,
                                                                      n_boot, seed)
        if "raw_pixels" in baselines:
            result["baselines"]["raw_pixels"] = fit(feats, tasks, {"ridge": make_ridge_probe},
                                                    lambda fs, kind: fs.raw_matrix(kind), what="raw pixels")

    try:
        _run_study(result, checkpoints, tasks, baselines, random_model, features, fit, label_baselines, kinds, log,
                   list(samplers))
    finally:
        bar.close()
    return result


def _run_study(result, checkpoints, tasks, baselines, random_model, features, fit, label_baselines, kinds, log,
               splits) -> None:
    """The checkpoints in order, then the baselines (see :func:`probe_study`)."""
    first = True
    for i, ck in enumerate(checkpoints):
        also = f" (also {', '.join(ck['same_as'])})" if ck.get("same_as") else ""
        log(f"probe: checkpoint {ck['label']}{also} ({i + 1}/{len(checkpoints)}): features of {', '.join(splits)}")
        model = ck["load"]()
        feats = features(model, kinds, raw=first and "raw_pixels" in baselines)
        entry = {"label": ck["label"], "step": ck.get("step"), "epoch": ck.get("epoch")}
        if ck.get("same_as"):
            entry["same_as"] = list(ck["same_as"])
        result["checkpoints"].append({**entry, "tasks": fit(feats, tasks, what=ck["label"])})
        if first:
            label_baselines(feats)
            first = False
        if i == len(checkpoints) - 1 and "patch_mean" in baselines:
            log("probe: patch-mean baseline")
            _patch_mean(result, model, features, tasks, fit, ck["label"])
        del model, feats
    if not checkpoints and ("static" in baselines or "raw_pixels" in baselines):
        label_baselines(features(None, set(), raw="raw_pixels" in baselines))
    if "patch_mean" in baselines and not checkpoints:
        result["notes"].append("patch_mean: skipped (no checkpoint to probe)")
    if "random_init" in baselines:
        if random_model is None:
            result["notes"].append("random_init: skipped (no way to build a fresh model)")
        else:
            log("probe: random-init baseline")
            result["baselines"]["random_init"] = fit(features(random_model(), kinds), tasks, what="random init")


def _patch_mean(result: dict, model, features, tasks, fit, label: str) -> None:
    enc_tasks = [t for t in tasks if t.features != "predictor"]
    if "mean" not in getattr(model.encoder, "poolings", ()):
        result["notes"].append("patch_mean: skipped (the encoder offers no 'mean' in `poolings`: "
                               "features(obs, pooling='mean'))")
        return
    if not enc_tasks:
        result["notes"].append("patch_mean: skipped (no encoder tasks)")
        return
    feats = features(model, {t.features for t in enc_tasks}, pooling="mean")
    result["baselines"]["patch_mean"] = {"checkpoint": label, "tasks": fit(feats, enc_tasks, what="patch mean")}
    result["notes"].append(f"patch_mean: encoder tasks only, checkpoint {label}")


# ----------------------------------------------------------------------------- run glue
def probe_factories_for(cfg: ProbeConfig) -> dict[str, Callable]:
    """Zero-argument builders for the configured probe names (registry first, then the built-ins)."""
    from wm_framework.plugins import get_registry

    reg = get_registry()
    out = {}
    for name in cfg.probes:
        params = {"seed": cfg.seed, **cfg.probe_params.get(name, {})}
        if name in reg.names("probes"):
            reg.get("probes", name).check_params(params)
            out[name] = (lambda n=name, p=params: reg.create("probes", n, **p))
        elif name in BUILTIN_PROBES:
            out[name] = (lambda n=name, p=params: BUILTIN_PROBES[n](**p))
        else:
            reg.get("probes", name)  # raises, listing the registered probes
    return out


def select_checkpoints(infos: list, wanted) -> list:
    """'all' | 'last' | list of labels -> CheckpointInfo list (unknown labels are an error)."""
    if not infos:
        return []
    if wanted in (None, "all"):
        return list(infos)
    if wanted == "last":
        return [infos[-1]]
    by_label = {c.label: c for c in infos}
    missing = [w for w in wanted if w not in by_label]
    if missing:
        raise WMUsageError(f"probe.checkpoints: unknown {missing}; have: {', '.join(by_label)}")
    return [by_label[w] for w in wanted]


#: Which label names a step that several checkpoints share (the others are listed as ``same_as``).
LABEL_PREFERENCE = ("last", "best")


def one_per_step(infos: list) -> list[tuple[Any, list[str]]]:
    """Checkpoints of the same step hold the same weights (``best`` is often ``last``): each
    step is probed once, under its preferred label, the others named beside it."""
    by_step: dict[int, list] = {}
    for c in infos:
        by_step.setdefault(c.step, []).append(c)
    out = []
    for step in sorted(by_step):
        group = by_step[step]
        rank = {label: i for i, label in enumerate(LABEL_PREFERENCE)}
        keep = min(group, key=lambda c: (rank.get(c.label, len(rank)), c.label))
        out.append((keep, [c.label for c in group if c is not keep]))
    return out


def _test_sampler(ctx, cfg: ProbeConfig, window: int, test_store) -> tuple[Any, str]:
    """The evaluation sampler and a truthful name for it."""
    if test_store is not None:
        from wm_framework.data.sampler import WindowSampler
        from wm_framework.data.store import EpisodeStore

        store = EpisodeStore.open(str(test_store))
        d = ctx.recipe.data
        return WindowSampler(store, np.arange(store.num_episodes), window, d.frameskip, mode=d.mode), f"store {test_store}"
    wanted = "test" if cfg.use_test_store else ("holdout" if len(ctx.splits()["holdout"]) else "val")
    split, note = ctx.resolve_split(wanted)
    return ctx.sampler(split, window), note


def train_test_overlap(train, test, window: int, frameskip: int):
    """Windows of the evaluation sampler that also occur in the training split, or None when
    the samplers do not say which store episodes they read."""
    if not all(hasattr(s, "store") and hasattr(s, "episodes") for s in (train, test)):
        return None
    from wm_framework.data.overlap import window_overlap  # lazy: hashing code is only needed here

    return window_overlap(train.store, test.store, window, frameskip,
                          episodes_a=train.episodes, episodes_b=test.episodes)


def run_probe_stage(ctx, cfg: ProbeConfig, checkpoints=None, test_store=None) -> dict:
    """Probe a run's checkpoints; write probes.json, results.json["probes"], the report and the plot."""
    from wm_framework.atomic import atomic_write_json

    if ctx.recipe.data is None:
        raise WMUsageError("probe: the recipe has no [data] section")
    window = cfg.window or ctx.recipe.data.window
    frameskip = int(ctx.recipe.data.frameskip)
    tasks = cfg.resolved_tasks(ctx.stores()["train"].label_names, frameskip)
    test, test_note = _test_sampler(ctx, cfg, window, test_store)
    samplers = {"train": ctx.sampler("train", window), "val": ctx.sampler("val", window), "test": test}
    infos = select_checkpoints(ctx.checkpoints(), checkpoints if checkpoints else cfg.checkpoints)
    cks = [{"label": c.label, "step": c.step, "epoch": c.epoch, "same_as": same,
            "load": (lambda c=c: ctx.load_model(c.path, device=ctx.device))} for c, same in one_per_step(infos)]
    result = probe_study(
        cks, samplers, tasks, probe_factories_for(cfg), window=window, frame=cfg.frame, baselines=cfg.baselines,
        random_model=lambda: ctx.build_model().to(ctx.device), batch_size=cfg.batch_size,
        max_rows={"train": cfg.max_train_rows, "val": cfg.max_eval_rows, "test": cfg.max_eval_rows},
        raw_size=tuple(cfg.raw_pixels_size), device=ctx.device, protocol_gap=cfg.protocol_gap,
        model_gap=frameskip if cfg.model_gap else None, n_boot=cfg.bootstrap, seed=cfg.seed,
        reference=None if (ref := cfg.resolved_reference()) is None else ref.model_dump(mode="json"),
        log=get_logger(__name__).info, progress=ctx.progress)
    result["test_set"] = test_note
    if cfg.overlap:
        overlap = train_test_overlap(samplers["train"], test, window, frameskip)
        if overlap is not None:
            result["overlap"] = {**overlap.to_json(), "describe": overlap.describe()}
    if not infos:
        result["notes"].append("no checkpoints found: only baselines were run")
    atomic_write_json(ctx.path / "probes.json", result)
    ctx.update_results("probes", summarize(result))
    plot = plot_r2_vs_epoch(result, ctx.plots_dir / "probe_r2.png")
    ctx.write_report_section("probe", "Probes", report_markdown(result, plot_name=plot.name if plot else None))
    return result
