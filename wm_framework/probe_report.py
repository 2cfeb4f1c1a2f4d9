"""The probing study: every checkpoint x task x probe, the baselines, and the report.

``probe_study`` works on plain objects (model loaders, samplers, probe factories) so
it is testable without a run directory; ``run_probe_stage`` wires it to a
``RunContext`` and writes ``probes.json``, ``results.json["probes"]``, the report
section and ``plots/probe_r2.png``.

Features are extracted once per checkpoint (one pass per split, all tasks share
it); then every probe is fitted on every task. Baselines go through the same code:

- ``static``: the label at t copied as the label at t + max(shift, 1) (no model),
- ``random_init``: the same architecture freshly initialised,
- ``patch_mean``: the last checkpoint with ``encoder.pooling = "mean"`` (encoder tasks),
- ``raw_pixels``: ridge regression on downsampled grey frames (raw states for state stores).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from wm_framework.errors import WMUsageError
from wm_framework.probe import ProbeConfig, ProbeTask, make_linear_probe, make_mlp_probe, make_ridge_probe, r2_score
from wm_framework.probe_features import FeatureSet, extract_features, persistence_rows, resolve_frame, task_rows

# Published test R^2 of the LeWM Breakout probing study (REFERENCE §2), by epoch.
PUBLISHED = {
    "mlp": {
        "ball_pos": {1: 0.178, 10: 0.306, 25: 0.212, 50: 0.234, 100: 0.272},
        "ball_vel": "< 0 (-0.22..-0.31)",
        "ball_pos_pred": {1: 0.131, 10: 0.243, 25: 0.230, 50: 0.226, 100: 0.253},
        "ball_vel_pred": "< 0",
        "paddle_pos": {1: -0.253, 10: -0.548, 25: -0.370, 50: -0.562, 100: 0.319},
        "paddle_pos_act": {100: 0.456},
    },
    "linear": {"ball_pos": {100: 0.301}, "ball_pos_pred": {100: 0.276}, "paddle_pos": {100: 0.478},
               "paddle_pos_act": {100: 0.607}},
    "static": {"ball_pos": 0.955, "ball_vel": 0.821, "paddle_pos": 0.778},
    "random_init": {"ball_pos": -0.351},
}

BUILTIN_PROBES = {"linear": make_linear_probe, "mlp": make_mlp_probe, "ridge": make_ridge_probe}
EVAL_SPLITS = ("val", "test")


def _scores(y: np.ndarray, pred: np.ndarray, targets: Sequence[str]) -> dict | None:
    if len(y) < 2:
        return None
    r2, per_dim = r2_score(y, pred)
    return {"r2": r2, "r2_per_dim": dict(zip(targets, per_dim)), "n": int(len(y))}


def fit_task_probes(feats: dict[str, FeatureSet], tasks: Sequence[ProbeTask], probe_factories: dict[str, Callable],
                    matrix: Callable[[FeatureSet, str], np.ndarray] | None = None) -> dict:
    """Fit each probe on each task (train split, early stopping on val); R^2 on val and test.

    ``matrix(fs, kind)`` picks the feature matrix (default ``fs.matrix``; the raw-pixel
    baseline passes ``fs.raw_matrix``). Returns ``{task: {probe: {"fit", "val", "test"}}}``.
    """
    pick = matrix or (lambda fs, kind: fs.matrix(kind))
    out: dict[str, Any] = {}
    for task in tasks:
        rows = {split: task_rows(fs, task, pick(fs, task.features)) for split, fs in feats.items()}
        x_tr, y_tr = rows["train"]
        if len(y_tr) < 2:
            out[task.name] = {"skipped": "fewer than 2 training rows with finite targets"}
            continue
        x_va, y_va = rows.get("val", (None, None))
        per_probe = {}
        for name, factory in probe_factories.items():
            probe = factory()
            entry: dict[str, Any] = {"fit": probe.fit(x_tr, y_tr, x_va, y_va)}
            for split in EVAL_SPLITS:
                if split in rows:
                    x, y = rows[split]
                    entry[split] = _scores(y, probe.predict(x), task.targets) if len(y) else None
            per_probe[name] = entry
        out[task.name] = per_probe
    return out


def static_baseline(feats: dict[str, FeatureSet], tasks: Sequence[ProbeTask]) -> dict:
    """R^2 of copying the label at t as the label at t + max(shift, 1), per task and eval split."""
    out = {}
    for task in tasks:
        out[task.name] = {split: _scores(*persistence_rows(feats[split], task), task.targets)
                          for split in EVAL_SPLITS if split in feats}
    return out


def probe_study(checkpoints: Sequence[dict], samplers: dict, tasks: Sequence[ProbeTask],
                probe_factories: dict[str, Callable], *, window: int, frame: int | None = None,
                baselines: Sequence[str] = (), random_model: Callable | None = None, batch_size: int = 64,
                max_rows: dict[str, int] | None = None, raw_size: tuple[int, int] = (32, 40), device=None,
                log: Callable[[str], None] = lambda msg: None) -> dict:
    """Run the whole study on plain objects.

    Args:
        checkpoints: ``[{"label", "step", "epoch", "load": () -> WorldModel}]`` in training order.
        samplers: ``{"train", "val", "test"} -> object with iter_batches(batch_size)``.
        tasks: the probing tasks.
        probe_factories: name -> zero-argument callable building a fresh probe.
        window, frame: window length L and probed frame t (default L-2).
        baselines: subset of static, random_init, patch_mean, raw_pixels.
        random_model: () -> freshly initialised WorldModel (for random_init).
        max_rows: per-split caps on windows.
    """
    frame = resolve_frame(window, frame, list(tasks), need_next="static" in baselines)
    kinds = {t.features for t in tasks}
    caps = max_rows or {}
    result: dict[str, Any] = {"window": window, "frame": frame, "tasks": [t.model_dump() for t in tasks],
                              "probes": list(probe_factories), "checkpoints": [], "baselines": {}, "notes": []}

    def features(model, kinds_, pooling=None, raw=False) -> dict[str, FeatureSet]:
        return {split: extract_features(model, s, kinds_, frame, window, batch_size=batch_size, max_rows=caps.get(split),
                                        device=device, pooling=pooling, raw_size=raw_size if raw else None)
                for split, s in samplers.items()}

    baseline_only_pass = not checkpoints and ("static" in baselines or "raw_pixels" in baselines)
    first = True
    for i, ck in enumerate(checkpoints):
        log(f"probe: checkpoint {ck['label']} ({i + 1}/{len(checkpoints)})")
        model = ck["load"]()
        feats = features(model, kinds, raw=first and "raw_pixels" in baselines)
        tasks_res = fit_task_probes(feats, tasks, probe_factories)
        result["checkpoints"].append({"label": ck["label"], "step": ck.get("step"), "epoch": ck.get("epoch"),
                                      "tasks": tasks_res})
        if first:
            _label_baselines(result, feats, tasks, baselines)
            first = False
        if i == len(checkpoints) - 1 and "patch_mean" in baselines:
            _patch_mean(result, model, features, tasks, probe_factories, ck["label"])
        del model, feats
    if baseline_only_pass:
        _label_baselines(result, features(None, set(), raw="raw_pixels" in baselines), tasks, baselines)
    if "patch_mean" in baselines and not checkpoints:
        result["notes"].append("patch_mean: skipped (no checkpoint to probe)")
    if "random_init" in baselines:
        if random_model is None:
            result["notes"].append("random_init: skipped (no way to build a fresh model)")
        else:
            log("probe: random-init baseline")
            result["baselines"]["random_init"] = fit_task_probes(features(random_model(), kinds), tasks, probe_factories)
    return result


def _label_baselines(result: dict, feats: dict[str, FeatureSet], tasks, baselines) -> None:
    """Baselines that need no model: static persistence and the raw-pixel ridge probe."""
    if "static" in baselines:
        result["baselines"]["static"] = static_baseline(feats, tasks)
    if "raw_pixels" in baselines:
        result["baselines"]["raw_pixels"] = fit_task_probes(
            feats, tasks, {"ridge": make_ridge_probe}, matrix=lambda fs, kind: fs.raw_matrix(kind))


def _patch_mean(result: dict, model, features, tasks, probe_factories, label: str) -> None:
    enc_tasks = [t for t in tasks if t.features != "predictor"]
    if not hasattr(model.encoder, "pooling"):
        result["notes"].append("patch_mean: skipped (the encoder has no `pooling` attribute)")
        return
    if not enc_tasks:
        result["notes"].append("patch_mean: skipped (no encoder tasks)")
        return
    feats = features(model, {t.features for t in enc_tasks}, pooling="mean")
    result["baselines"]["patch_mean"] = {"checkpoint": label, "tasks": fit_task_probes(feats, enc_tasks, probe_factories)}
    result["notes"].append(f"patch_mean: encoder tasks only, checkpoint {label}")


# ----------------------------------------------------------------------------- run glue
def probe_factories_for(cfg: ProbeConfig) -> dict[str, Callable]:
    """Zero-argument builders for the configured probe names (registry first, then the built-ins)."""
    from wm_framework.registry import get_registry

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


def _test_sampler(ctx, cfg: ProbeConfig, window: int, test_store) -> tuple[Any, str]:
    if test_store is not None:
        from wm_framework.data.sampler import WindowSampler
        from wm_framework.data.store import EpisodeStore

        store = EpisodeStore.open(str(test_store))
        d = ctx.recipe.data
        return WindowSampler(store, np.arange(store.num_episodes), window, d.frameskip, mode=d.mode), f"store {test_store}"
    if cfg.use_test_store and ctx.stores().get("test") is not None:
        return ctx.sampler("test", window), f"test store {ctx.recipe.data.test}"
    split = "holdout" if len(ctx.splits()["holdout"]) else "val"
    note = "holdout split" if split == "holdout" else "val split (no test store and no holdout policies)"
    return ctx.sampler(split, window), note


def run_probe_stage(ctx, cfg: ProbeConfig, checkpoints=None, test_store=None) -> dict:
    """Probe a run's checkpoints; write probes.json, results.json["probes"], the report and the plot."""
    from wm_framework.train.checkpoint import atomic_write_json

    if ctx.recipe.data is None:
        raise WMUsageError("probe: the recipe has no [data] section")
    window = cfg.window or ctx.recipe.data.window
    tasks = cfg.resolved_tasks(ctx.stores()["train"].label_names)
    test, test_note = _test_sampler(ctx, cfg, window, test_store)
    samplers = {"train": ctx.sampler("train", window), "val": ctx.sampler("val", window), "test": test}
    infos = select_checkpoints(ctx.checkpoints(), checkpoints if checkpoints else cfg.checkpoints)
    cks = [{"label": c.label, "step": c.step, "epoch": c.epoch,
            "load": (lambda c=c: ctx.load_model(c.path, device=ctx.device))} for c in infos]
    result = probe_study(
        cks, samplers, tasks, probe_factories_for(cfg), window=window, frame=cfg.frame, baselines=cfg.baselines,
        random_model=lambda: ctx.build_model().to(ctx.device), batch_size=cfg.batch_size,
        max_rows={"train": cfg.max_train_rows, "val": cfg.max_eval_rows, "test": cfg.max_eval_rows},
        raw_size=tuple(cfg.raw_pixels_size), device=ctx.device, log=print)
    result["test_set"] = test_note
    if not infos:
        result["notes"].append("no checkpoints found: only baselines were run")
    atomic_write_json(ctx.path / "probes.json", result)
    ctx.update_results("probes", summarize(result))
    plot = plot_r2_vs_epoch(result, ctx.plots_dir / "probe_r2.png")
    ctx.write_report_section("probe", "Probes", report_markdown(result, plot_name=plot.name if plot else None))
    return result


# ----------------------------------------------------------------------------- summary + markdown
def _test_r2(entry: dict | None, split: str = "test") -> float | None:
    if not entry or entry.get(split) is None:
        return None
    return entry[split]["r2"]


def summarize(result: dict) -> dict:
    """Compact figures for results.json: test R^2 by task, probe and checkpoint, plus baselines."""
    out: dict[str, Any] = {"test_set": result.get("test_set"), "tasks": {}, "baselines": {}}
    for ck in result["checkpoints"]:
        for task, probes in ck["tasks"].items():
            for probe, entry in probes.items() if "skipped" not in probes else []:
                out["tasks"].setdefault(task, {}).setdefault(probe, {})[ck["label"]] = _test_r2(entry)
    b = result["baselines"]
    for task, splits in b.get("static", {}).items():
        out["baselines"].setdefault("static", {})[task] = (splits.get("test") or {}).get("r2")
    for name in ("random_init", "raw_pixels"):
        for task, probes in b.get(name, {}).items():
            if "skipped" not in probes:
                out["baselines"].setdefault(name, {})[task] = {p: _test_r2(e) for p, e in probes.items()}
    for task, probes in b.get("patch_mean", {}).get("tasks", {}).items():
        if "skipped" not in probes:
            out["baselines"].setdefault("patch_mean", {})[task] = {p: _test_r2(e) for p, e in probes.items()}
    return out


def _fmt(x) -> str:
    return "—" if x is None else f"{x:+.3f}"


def _published(probe: str, task: str) -> str:
    ref = PUBLISHED.get(probe, {}).get(task)
    if ref is None:
        return ""
    if isinstance(ref, str):
        return ref
    return " / ".join(f"ep{e}: {v:+.3f}" for e, v in ref.items())


def report_markdown(result: dict, plot_name: str | None = None) -> str:
    """Tables tasks x checkpoints per probe type (test R^2), baselines and published numbers."""
    tasks = [t["name"] for t in result["tasks"]]
    ck_labels = [c["label"] for c in result["checkpoints"]]
    b = result["baselines"]
    lines = [f"Test set: {result.get('test_set', 'test')}. Probed frame t = {result['frame']} of "
             f"{result['window']}-frame windows; R^2 averaged over target dims (per dim in probes.json).", ""]
    for probe in result["probes"]:
        extra = [h for h, key in (("random init", "random_init"), ("patch mean", "patch_mean")) if key in b]
        head = ["task"] + ck_labels + extra + ["published (LeWM)"]
        lines += [f"### {probe} probe, test R^2", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for task in tasks:
            row = [task]
            for ck in result["checkpoints"]:
                row.append(_fmt(_test_r2(ck["tasks"].get(task, {}).get(probe))))
            if "random_init" in b:
                row.append(_fmt(_test_r2(b["random_init"].get(task, {}).get(probe))))
            if "patch_mean" in b:
                row.append(_fmt(_test_r2(b["patch_mean"]["tasks"].get(task, {}).get(probe))))
            row.append(_published(probe, task))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if "static" in b or "raw_pixels" in b:
        lines += ["### Baselines without a model, test R^2", "",
                  "| task | static (copy t as t+max(shift,1)) | raw pixels (ridge) | published static |", "|---|---|---|---|"]
        for task in tasks:
            static = (b.get("static", {}).get(task, {}).get("test") or {}).get("r2")
            raw = _test_r2(b.get("raw_pixels", {}).get(task, {}).get("ridge"))
            pub = PUBLISHED["static"].get(task)
            lines.append(f"| {task} | {_fmt(static)} | {_fmt(raw)} | {'' if pub is None else f'{pub:+.3f}'} |")
        lines.append("")
    if PUBLISHED["random_init"]:
        lines.append("Published random-encoder baseline: " +
                     ", ".join(f"{k} {v:+.3f}" for k, v in PUBLISHED["random_init"].items()) + ".")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if plot_name:
        lines += ["", f"![probe R^2 vs epoch](plots/{plot_name})"]
    return "\n".join(lines) + "\n"


def plot_r2_vs_epoch(result: dict, path) -> "Path | None":
    """One panel per task: test R^2 against training epoch for each probe, baselines dashed."""
    from pathlib import Path

    cks = result["checkpoints"]
    tasks = [t["name"] for t in result["tasks"]]
    if not cks or not tasks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c["epoch"] if c.get("epoch") is not None else c.get("step", i) for i, c in enumerate(cks)]
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    b = result["baselines"]
    for ax, task in zip(axes.flat, tasks):
        for probe in result["probes"]:
            ys = [_test_r2(c["tasks"].get(task, {}).get(probe)) for c in cks]
            ys = [np.nan if y is None else y for y in ys]
            ax.plot(xs, ys, marker="o", label=probe)
            ref = PUBLISHED.get(probe, {}).get(task)
            if isinstance(ref, dict):
                ax.plot(list(ref), list(ref.values()), linestyle="none", marker="x", label=f"{probe} (published)")
        static = (b.get("static", {}).get(task, {}).get("test") or {}).get("r2")
        raw = _test_r2(b.get("raw_pixels", {}).get(task, {}).get("ridge"))
        for value, name in ((static, "static"), (raw, "raw pixels")):
            if value is not None:
                ax.axhline(value, linestyle="--", linewidth=1, color="grey" if name == "static" else "tab:green",
                           label=name)
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test R^2")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)  # atomic: a crash never leaves a half-written plot
    return path
