"""What a command says while it works: one ``logging`` tree, Rich on the terminal, run.log on disk.

Everything the framework reports as it goes (stages, training progress, validation
metrics, probe progress, warnings) is a record of the ``wm_framework`` logger, so it
reaches two places with one call:

- the console (stderr: Rich's handler on a terminal, plain unwrapped lines when piped),
  at the level ``wm --quiet`` (warnings only) / default (info) / ``wm --verbose`` (debug) chose;
- ``run.log`` in the run directory a command works on (appended, so a resumed run keeps
  one log), always at info or below, whatever the console shows.

Results a command prints for the user to read or pipe (tables, paths, JSON) stay on
stdout and are not log records. A record with ``extra={"console": False}`` goes to
run.log only: the periodic training lines while a progress bar already shows them.
Plugins log through ``wm_framework.get_logger(__name__)``: their loggers are children of
``wm_framework`` (``wm_framework.ext.<module>``) and are routed the same way.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOGGER_NAMES = ("wm_framework",)
#: Console levels by verbosity: --quiet, default, --verbose.
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_state = {"verbosity": 0, "console": None, "command_log": None}


def get_logger(name: str = "wm_framework") -> logging.Logger:
    """The logger of a module of the framework or of a plugin (pass ``__name__``); a plugin's
    becomes ``wm_framework.ext.<name>``, so the console and run.log get its lines too."""
    if name != "wm_framework" and not name.startswith("wm_framework."):
        name = f"wm_framework.ext.{name}"
    return logging.getLogger(name)


def verbosity() -> int:
    """-1 (--quiet), 0 or 1 (--verbose), as :func:`configure` was last called."""
    return _state["verbosity"]


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


class _StderrHandler(logging.StreamHandler):
    """Plain lines to whatever ``sys.stderr`` is when a record is written (pipes, CI, captured streams)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _console_handler() -> logging.Handler:
    """Rich's handler on a terminal; plain unwrapped lines otherwise (Rich's log layout pads
    and wraps every line to the console width, which log files and greps do not want)."""
    if console_is_terminal():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                                               show_level=False, markup=False, rich_tracebacks=False, keywords=[])
    else:
        handler = _StderrHandler()
    handler.setFormatter(_ConsoleFormatter("%(message)s"))
    handler.addFilter(_ConsoleFilter())
    return handler


class _ConsoleFormatter(logging.Formatter):
    """The message alone; warnings and errors keep a visible 'warning:' / 'error:' on the
    console, where no level column is shown."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING and not text.lower().startswith(record.levelname.lower()):
            text = f"{record.levelname.lower()}: {text}"
        return text


def configure(verbosity_level: int = 0) -> None:
    """Install (once) the console handler at the level of ``verbosity_level`` (-1, 0, 1).

    Python warnings (``warnings.warn``) are captured into the same tree, so they reach
    run.log too.
    """
    verbosity_level = max(-1, min(1, int(verbosity_level)))
    _state["verbosity"] = verbosity_level
    if _state["console"] is None:
        handler = _console_handler()
        _state["console"] = handler
        for name in (*LOGGER_NAMES, "py.warnings"):
            # Records still propagate to the root logger, which has no handler in the CLI
            # (so nothing prints twice) and which test tools (pytest's caplog) listen on.
            logging.getLogger(name).addHandler(handler)
        logging.captureWarnings(True)
    _state["console"].setLevel(LEVELS[verbosity_level])
    for name in (*LOGGER_NAMES, "py.warnings"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity_level > 0 else logging.INFO)


def _file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened by the logging module with the process umask, like every other file we write.
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG if _state["verbosity"] > 0 else logging.INFO)
    return handler


def _attach(handler: logging.Handler) -> None:
    for name in (*LOGGER_NAMES, "py.warnings"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)


def _detach(handler: logging.Handler) -> None:
    for name in (*LOGGER_NAMES, "py.warnings"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()


@contextmanager
def run_log(run_dir: str | Path | None) -> Iterator[None]:
    """Append everything logged inside the block to ``run_dir/run.log`` (None: nothing).

    Nested blocks (a sweep and its runs) each get the lines logged while they are open.
    An exception leaving the block is logged to the file as its one line, the same line
    the console shows, so a failed run's log says how it ended.
    """
    if run_dir is None:
        yield
        return
    handler = _file_handler(Path(run_dir) / "run.log")
    _attach(handler)
    try:
        yield
    except BaseException as e:
        if not isinstance(e, SystemExit):
            handler.handle(_ending_record(e))
        raise
    finally:
        _detach(handler)


def log_command_to_run(run_dir: str | Path) -> None:
    """For a command acting on a finished run (``wm probe RUN`` ...): from now on this
    process also logs into that run's run.log (replacing the run it logged to before)."""
    old = _state["command_log"]
    if old is not None:
        _detach(old)
    handler = _file_handler(Path(run_dir) / "run.log")
    _attach(handler)
    _state["command_log"] = handler
    logging.getLogger("wm_framework").info("command: %s", " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                           extra={"console": False})


def _ending_record(exc: BaseException) -> logging.LogRecord:
    from wm_framework.stops import Terminated

    if isinstance(exc, Terminated):
        msg = "stopped by SIGTERM"
    elif isinstance(exc, KeyboardInterrupt):
        msg = "interrupted"
    else:
        text = str(exc).splitlines()[0] if str(exc) else ""
        msg = f"error: {type(exc).__name__}: {text}" if text else f"error: {type(exc).__name__}"
    return logging.LogRecord("wm_framework", logging.ERROR, __file__, 0, msg, None, None)


def console_is_terminal() -> bool:
    """Whether progress bars can be drawn (stderr is a TTY and not turned off)."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class Progress:
    """A Rich progress bar on a terminal; on a pipe (CI logs) the periodic lines instead.

    The periodic lines (``update(..., force_line=True)``) are log records either way, so
    run.log has them; on a terminal they skip the console, where the bar shows the same.
    ``--quiet`` hides both bar and lines from the console.
    """

    def __init__(self, total: int, start: int, description: str, enabled: bool = True, unit: str = "step",
                 logger: logging.Logger | None = None):
        self.total, self.unit, self.description, self.done = total, unit, description, start
        self.enabled = enabled and verbosity() >= 0
        self.log = logger or get_logger("wm_framework.progress")
        self._bar = None
        if self.enabled and console_is_terminal():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task(description, total=total, completed=start, info="")
            self._bar.start()

    def advance(self, n: int = 1, info: str = "") -> None:
        """``n`` more units done (collection, rendering, export: counted, not stepped)."""
        self.update(self.done + n, info)

    def update(self, done: int, info: str = "", force_line: bool = False) -> None:
        self.done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
        if force_line:
            shown = self.enabled and self._bar is None
            # Training's lines read "step 200/1000 loss ..."; counted work names itself first
            # ("collect: episode 40/40 ...") since its unit alone does not say what ran.
            head = "" if self.unit == "step" else f"{self.description}: "
            self.log.info("%s%s %d/%d %s", head, self.unit, done, self.total, info, extra={"console": shown})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
