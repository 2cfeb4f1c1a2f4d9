"""Sweep directories for the commands that act on a run (`wm plan|eval|probe|surprise|straightness`).

Why this module: a sweep's run directory (``runs/<timestamp>_<recipe>/``) holds no model
of its own; its runs live in ``sweep/<label>/``, each a complete run directory (see
``run.py``). Given such a parent, a command used to fail with "no checkpoint 'last'".
Here is the one place that knows how to tell a sweep parent from a run, list its runs
in the sweep's order, pick some of them (``--runs cfgA,cfgC``), run a command on each
and write one comparison table, so the five commands share the behaviour instead of
copying it.

The table goes into the parent's ``report.md`` (section ``sweep_<command>``) and its
``results.json["sweep_<command>"]`` through :class:`~wm_framework.runs.context.RunContext`,
whose writes are atomic. It is rewritten after every run, so an interrupted sweep
keeps the rows done so far. Each run still gets its own outputs exactly as when the
command is given that run's directory. A run that fails is recorded in its row and
the others carry on; the caller then exits non-zero with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from wm_framework.console import get_logger
from wm_framework.errors import WMError, WMRuntimeError, WMUsageError

log = get_logger(__name__)

T = TypeVar("T")

#: Where ``wm run`` puts a sweep's runs inside its directory (``run.py``: ``ctx.path / "sweep" / label``).
SWEEP_SUBDIR = "sweep"


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its label and its run directory."""

    label: str
    path: Path


@dataclass
class SweepComparison:
    """What :func:`compare_runs` did: one row per selected run, in the sweep's order."""

    command: str
    parent: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def sweep_labels(run_dir: str | Path) -> list[str] | None:
    """The labels of the runs of the sweep in ``run_dir``, in the sweep's order; None when
    ``run_dir`` is not a sweep parent (a single run, a sweep's run, or no run at all).

    The parent's ``recipe.resolved.toml`` still has its ``[sweep]`` table (a sweep's runs
    get the recipe without it), so the labels come from the same expansion ``wm run`` used.
    """
    from wm_framework.recipe import expand_sweep, load_toml

    rfile = Path(run_dir) / "recipe.resolved.toml"
    if not rfile.is_file():
        return None
    data = load_toml(rfile)
    if not data.get("sweep"):
        return None
    labels = [label for label, _ in expand_sweep(data)]
    return None if labels in ([], [""]) else labels


def select_runs(run_dir: str | Path, runs: Iterable[str] | None) -> list[SweepRun] | None:
    """The sweep runs a command should act on, or None when ``run_dir`` is a single run.

    ``runs`` are labels from ``--runs`` (repeated and/or comma-separated); none selects
    every run. Unknown labels, or ``--runs`` on a single run, are one-line usage errors.
    """
    wanted = [r for r in (runs or []) if r.strip()]
    labels = sweep_labels(run_dir)
    if labels is None:
        if wanted and not (Path(run_dir) / "recipe.resolved.toml").is_file():
            raise WMUsageError(f"{run_dir}: not a run directory (no recipe.resolved.toml)")
        if wanted:
            raise WMUsageError(f"--runs: {run_dir} is a single run, not a sweep directory; drop --runs")
        return None
    chosen = parse_run_labels(wanted, labels) if wanted else list(labels)
    unknown = [c for c in chosen if c not in labels]
    if unknown:
        raise WMUsageError(f"--runs: unknown run(s) {', '.join(unknown)}; the sweep has: {', '.join(labels)}")
    chosen = set(chosen)
    return [SweepRun(label, Path(run_dir) / SWEEP_SUBDIR / label) for label in labels if label in chosen]


def parse_run_labels(items: Iterable[str], labels: list[str]) -> list[str]:
    """Split ``--runs`` values on commas, keeping grid labels that contain commas whole.

    Grid sweeps label runs ``lr=0.001,steps=4``, so a plain split would break them: at
    each piece the longest run of pieces that spells a known label wins, else the piece
    alone stands (and is reported as unknown).
    """
    known, out = set(labels), []
    for item in items:
        pieces = [p.strip() for p in item.split(",")]
        i = 0
        while i < len(pieces):
            j = next((j for j in range(len(pieces), i, -1) if ",".join(pieces[i:j]) in known), i + 1)
            if ",".join(pieces[i:j]):
                out.append(",".join(pieces[i:j]))
            i = j
    return out


def compare_runs(command: str, title: str, runs: list[SweepRun], parent: str | Path,
                 run_one: Callable[[Path], T], row: Callable[[T], dict[str, Any]]) -> SweepComparison:
    """Run ``run_one(run_dir)`` on every run and write the comparison table into ``parent``.

    ``row(result)`` gives the run's headline numbers, column name -> value (columns are
    the union over runs, in order of first appearance). Any exception from a run is
    recorded in its row and the next run starts; Ctrl-C stops the loop, the table
    keeping what was done.
    """
    from wm_framework.runs.context import load_run

    parent_ctx = load_run(parent)
    comp = SweepComparison(command, Path(parent))
    comp.rows = [{"run": r.label, "status": "not run", "values": {}} for r in runs]
    for i, (r, entry) in enumerate(zip(runs, comp.rows), 1):
        log.info("wm %s: sweep run %s (%d/%d)", command, r.label, i, len(runs))
        try:
            entry["values"] = row(run_one(r.path))
            entry["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - one run's failure must not lose the others
            entry["status"] = "failed"
            entry["error"] = _one_line(e)
            entry["usage_error"] = isinstance(e, WMUsageError)
            log.warning("wm %s: run %s failed: %s", command, r.label, entry["error"])
        _write(parent_ctx, comp, title)
    return comp


def finish(comp: SweepComparison, echo: Callable[[str], None]) -> None:
    """Show the table and where it went; raise one line when any run failed (exit 1, or 2
    when every run failed on bad input, e.g. an option none of them accepts)."""
    echo(comparison_markdown(comp))
    echo(f"report: {comp.parent / 'report.md'}")
    failed = comp.failed
    if failed:
        names = ", ".join(f"{r['run']} ({r.get('error', r['status'])})" for r in failed)
        msg = f"wm {comp.command}: {len(failed)} of {len(comp.rows)} sweep runs failed: {names}"
        if len(failed) == len(comp.rows) and all(r.get("usage_error") for r in failed):
            raise WMUsageError(msg)
        raise WMRuntimeError(msg)


def on_sweep(command: str, title: str, run_dir: str | Path, runs: Iterable[str] | None,
             run_one: Callable[[Path], T], row: Callable[[T], dict[str, Any]],
             echo: Callable[[str], None]) -> bool:
    """When ``run_dir`` is a sweep: run ``run_one`` on its runs (or ``--runs``), write and show the
    comparison, and return True (the command is done); for a single run return False."""
    selected = select_runs(run_dir, runs)
    if selected is None:
        return False
    finish(compare_runs(command, title, selected, run_dir, run_one, row), echo)
    return True


def comparison_markdown(comp: SweepComparison) -> str:
    """One row per run: its headline numbers, its status (or error) and a link to its report."""
    columns: list[str] = []
    for r in comp.rows:
        columns += [c for c in r["values"] if c not in columns]
    head = "| run | " + "".join(f"{_cell(c)} | " for c in columns) + "status | report |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for r in comp.rows:
        status = r["status"] if r["status"] != "failed" else f"failed: {r['error']}"
        cells = "".join(f"{_cell(_fmt(r['values'].get(c)))} | " for c in columns)
        lines.append(f"| {_cell(r['run'])} | {cells}{_cell(status)} | [report]({SWEEP_SUBDIR}/{r['run']}/report.md) |")
    return "\n".join(lines)


def _write(parent_ctx, comp: SweepComparison, title: str) -> None:
    key = f"sweep_{comp.command}"
    # A list, not a dict by label: results.json is written with sorted keys, the sweep's order matters.
    parent_ctx.update_results(key, [{k: v for k, v in r.items() if k != "usage_error"} for r in comp.rows])
    note = (f"`wm {comp.command}` on {len(comp.rows)} run(s) of this sweep; each run's own report has the "
            f"details. Rewritten by every `wm {comp.command}` on this directory.")
    parent_ctx.write_report_section(key, title, comparison_markdown(comp) + "\n\n" + note)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(e, WMError) else f"{type(e).__name__}: {msg}".rstrip(": ")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _cell(text: str) -> str:
    """Markdown-safe table cell (a ``|`` in an error message would split the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")
