"""What a probing study reports: results.json figures, the report section, the R^2 plot.

Every figure says what it was measured on: the evaluation split by name (a test store,
the holdout split, or the validation split when nothing else exists), each task's
offset in env steps, n (rows and episodes) and a bootstrap 95% interval. Published
numbers (``result["reference"]``: the recipe's ``[probe.reference]`` or the task preset's)
are only printed beside ours where the task's offset is the published one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wm_framework.stages.probe.stats import MIN_EPISODES

def _reference(result: dict) -> dict:
    """The published figures stored with the result (``ProbeReference`` as JSON), or an empty one."""
    ref = result.get("reference") or {}
    return {"label": ref.get("label", "published"), "offsets": ref.get("offsets", {}),
            "static_gap": ref.get("static_gap", 1), "r2": ref.get("r2", {}), "static": ref.get("static", {}),
            "random_init": ref.get("random_init", {})}


def _entry(entry: dict | None, split: str = "test") -> dict | None:
    return entry.get(split) if entry else None


def _test_r2(entry: dict | None, split: str = "test") -> float | None:
    e = _entry(entry, split)
    return None if e is None else e["r2"]


def _brief(score: dict | None) -> dict | None:
    """R^2 with its interval and sample size, for results.json."""
    if score is None:
        return None
    return {k: score[k] for k in ("r2", "ci95", "n", "n_episodes") if k in score}


def summarize(result: dict) -> dict:
    """Compact figures for results.json: test R^2 (+ interval, n) by task, probe and checkpoint, baselines."""
    offsets = {t["name"]: t["offset"] for t in result["tasks"]}
    out: dict[str, Any] = {"test_set": result.get("test_set"), "gaps": result.get("gaps"), "offsets": offsets,
                           "tasks": {}, "baselines": {}}
    if "overlap" in result:
        out["overlap"] = result["overlap"]
    for ck in result["checkpoints"]:
        for task, probes in ck["tasks"].items():
            for probe, entry in probes.items() if "skipped" not in probes else []:
                brief = _brief(_entry(entry))
                for label in [ck["label"], *ck.get("same_as", [])]:  # a step probed once, found by each of its labels
                    out["tasks"].setdefault(task, {}).setdefault(probe, {})[label] = brief
    b = result["baselines"]
    for key in ("static", "static_model_gap"):
        for task, splits in b.get(key, {}).items():
            out["baselines"].setdefault(key, {})[task] = {"gap": splits.get("gap"), **(_brief(splits.get("test")) or {})}
    for name in ("random_init", "raw_pixels"):
        for task, probes in b.get(name, {}).items():
            if "skipped" not in probes:
                out["baselines"].setdefault(name, {})[task] = {p: _brief(_entry(e)) for p, e in probes.items()}
    for task, probes in b.get("patch_mean", {}).get("tasks", {}).items():
        if "skipped" not in probes:
            out["baselines"].setdefault("patch_mean", {})[task] = {p: _brief(_entry(e)) for p, e in probes.items()}
    return out


def _fmt(x) -> str:
    return "—" if x is None else f"{x:+.3f}"


def _cell(score: dict | None) -> str:
    """``+0.272 [+0.21, +0.33]``: R^2 and its bootstrap 95% interval."""
    if score is None:
        return "—"
    ci = score.get("ci95")
    return _fmt(score["r2"]) + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _n(score: dict | None) -> str:
    if score is None:
        return "—"
    return f"{score['n']}" + (f" ({score['n_episodes']} ep.)" if "n_episodes" in score else "")


def _published(ref: dict, probe: str, task: str, offset: int) -> str:
    fig = ref["r2"].get(probe, {}).get(task)
    if fig is None:
        return ""
    if ref["offsets"].get(task) != offset:
        return f"(published at offset {ref['offsets'].get(task)}: not comparable)"
    if isinstance(fig, str):
        return fig
    return " / ".join(f"ep{e}: {v:+.3f}" for e, v in fig.items())


def _header(result: dict) -> list[str]:
    gaps = result.get("gaps") or {}
    lines = [f"Evaluation split (the R^2 columns below): **{result.get('test_set', 'test')}**. Probed frame t = "
             f"{result['frame']} of {result['window']}-frame windows. Offsets are **env steps** after t "
             f"(store rows), not window frames. R^2 averaged over target dims (per dim in probes.json); "
             f"[lo, hi] = bootstrap 95% interval (episodes resampled; none with fewer than {MIN_EPISODES} evaluation "
             f"episodes); n = evaluation rows (episodes).", ""]
    if gaps.get("model") is not None and gaps.get("model") != gaps.get("protocol"):
        lines += [f"Gaps: the published protocol's t+1 is {gaps.get('protocol')} env step(s) (tasks and the "
                  f"'published' columns use it); the world model looks {gaps['model']} env steps ahead (one window "
                  f"frame): rows `<task>@{gaps['model']}` and the second static column use that gap.", ""]
    if "overlap" in result:
        lines += [f"Train/evaluation overlap: {result['overlap']['describe']}.", ""]
    return lines


def report_markdown(result: dict, plot_name: str | None = None) -> str:
    """Tables tasks x checkpoints per probe type (R^2 on the evaluation split), baselines, published numbers."""
    offsets = {t["name"]: t["offset"] for t in result["tasks"]}
    tasks = list(offsets)
    ck_labels = [c["label"] + (f" (= {', '.join(c['same_as'])})" if c.get("same_as") else "") for c in result["checkpoints"]]
    b = result["baselines"]
    ref = _reference(result)
    has_ref = result.get("reference") is not None
    lines = _header(result)
    for probe in result["probes"]:
        extra = [h for h, key in (("random init", "random_init"), ("patch mean", "patch_mean")) if key in b]
        head = ["task", "offset", "n"] + ck_labels + extra + ([ref["label"]] if has_ref else [])
        lines += [f"### {probe} probe, R^2 on the evaluation split", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for task in tasks:
            entries = [_entry(ck["tasks"].get(task, {}).get(probe)) for ck in result["checkpoints"]]
            row = [task, str(offsets[task]), _n(next((e for e in entries if e), None))]
            row += [_cell(e) for e in entries]
            if "random_init" in b:
                row.append(_cell(_entry(b["random_init"].get(task, {}).get(probe))))
            if "patch_mean" in b:
                row.append(_cell(_entry(b["patch_mean"]["tasks"].get(task, {}).get(probe))))
            if has_ref:
                row.append(_published(ref, probe, task, offsets[task]))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if "static" in b or "raw_pixels" in b:
        model_gap = (result.get("gaps") or {}).get("model")
        second = "static_model_gap" in b
        head = ["task", "static: copy t as t+gap", "gap", "n"] + ([f"static, model gap ({model_gap} steps)"] if second else [])
        gap = ref["static_gap"]
        head += ["raw pixels (ridge)"] + ([f"{ref['label']} static (gap {gap})"] if has_ref else [])
        lines += ["### Baselines without a model, R^2 on the evaluation split", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for task in tasks:
            st = b.get("static", {}).get(task, {})
            row = [task, _cell(st.get("test")), str(st.get("gap", "—")), _n(st.get("test"))]
            if second:
                row.append(_cell(b["static_model_gap"].get(task, {}).get("test")))
            row.append(_cell(_entry(b.get("raw_pixels", {}).get(task, {}).get("ridge"))))
            pub = ref["static"].get(task)
            if has_ref:
                row.append("" if pub is None else f"{pub:+.3f}" if st.get("gap") == gap
                           else f"{pub:+.3f} (at gap {gap}: not comparable)")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if ref["random_init"]:
        lines.append(f"Random-encoder baseline, {ref['label']}: " +
                     ", ".join(f"{k} {v:+.3f}" for k, v in ref["random_init"].items()) + ".")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if plot_name:
        lines += ["", f"![probe R^2 vs epoch](plots/{plot_name})"]
    return "\n".join(lines) + "\n"


def plot_r2_vs_epoch(result: dict, path) -> Path | None:
    """One panel per task: evaluation R^2 against training epoch for each probe, baselines dashed."""

    cks = result["checkpoints"]
    offsets = {t["name"]: t["offset"] for t in result["tasks"]}
    tasks = list(offsets)
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
    ref = _reference(result)
    for ax, task in zip(axes.flat, tasks):
        for probe in result["probes"]:
            ys = [_test_r2(c["tasks"].get(task, {}).get(probe)) for c in cks]
            ys = [np.nan if y is None else y for y in ys]
            ax.plot(xs, ys, marker="o", label=probe)
            fig_ = ref["r2"].get(probe, {}).get(task)
            if isinstance(fig_, dict) and ref["offsets"].get(task) == offsets[task]:
                ax.plot([float(e) for e in fig_], list(fig_.values()), linestyle="none", marker="x",
                        label=f"{probe} ({ref['label']})")
        static = ((b.get("static", {}).get(task, {}).get("test")) or {}).get("r2")
        raw = _test_r2(b.get("raw_pixels", {}).get(task, {}).get("ridge"))
        for value, name in ((static, "static"), (raw, "raw pixels")):
            if value is not None:
                ax.axhline(value, linestyle="--", linewidth=1, color="grey" if name == "static" else "tab:green",
                           label=name)
        ax.set_title(f"{task} (offset {offsets[task]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("R^2 (evaluation split)")
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
