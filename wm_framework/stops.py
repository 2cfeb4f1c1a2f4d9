"""How a command stops early: Ctrl-C, SIGTERM or a full disk, said in one line with how to go on.

Long work (a run, a collection) declares how it is continued with
``how_to_continue("resume with: wm run --resume runs/x")``; when an interrupt or a
disk-full error leaves that block, the CLI's one line ends with it. SIGTERM (what
``kill``, SLURM and container runtimes send) is raised as :class:`Terminated`, a
``KeyboardInterrupt``, so the same ``finally`` blocks that clean up after Ctrl-C (stop
collection workers, release locks) run for it too; before, SIGTERM killed the process
where it stood and multiprocessing reported leaked semaphores.

A full disk reaches us in disguise: ``torch.save`` turns the ``OSError`` of a short write
into ``RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos``, with the
``OSError`` only in the exception's context. :func:`disk_full_cause` finds it.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

#: errno values of a full disk or quota.
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

_hints: list[str] = []
_hint_of_stop: str | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C."""


@contextmanager
def how_to_continue(text: str) -> Iterator[None]:
    """Within the block, an early stop's message ends with ``text`` (the innermost wins)."""
    global _hint_of_stop
    _hints.append(text)
    try:
        yield
    except BaseException:
        _hint_of_stop = _hint_of_stop or text
        raise
    finally:
        _hints.pop()


def install_signal_handlers() -> None:
    """SIGTERM raises :class:`Terminated`; both it and Ctrl-C are remembered, because Typer
    turns a KeyboardInterrupt into a bare exit code 130 before the CLI sees it. Main
    thread only; a SIGINT the parent shell ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    if getattr(sys.unraisablehook, "__name__", "") != _redeliver_swallowed_stop.__name__:
        _redeliver_swallowed_stop.previous = sys.unraisablehook
        sys.unraisablehook = _redeliver_swallowed_stop


def _redeliver_swallowed_stop(unraisable) -> None:
    """A signal that lands while a finalizer runs (a multiprocessing queue being collected)
    raises there, and Python swallows it ("Exception ignored in: <Finalize object>"): the
    stop would be lost. Deliver the signal again shortly, from outside that finalizer."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _signal_received is not None:
        timer = threading.Timer(0.05, os.kill, (os.getpid(), _signal_received))
        timer.daemon = True
        timer.start()
        return
    _redeliver_swallowed_stop.previous(unraisable)


_redeliver_swallowed_stop.previous = sys.unraisablehook


_signal_received: int | None = None


def _on_signal(signum, frame) -> None:
    global _signal_received
    _signal_received = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def pending_stop(exit_code) -> Stop | None:
    """The line of a signal that ended the command although no exception reached the CLI
    (Typer returns 130 for a KeyboardInterrupt it caught); None when the command finished."""
    global _signal_received
    signum, _signal_received = _signal_received, None
    if signum is None or exit_code != 130:
        return None
    return describe_stop(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The ``OSError`` of a full disk (or quota) behind ``exc``, if there is one."""
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in DISK_FULL), None)


@dataclass
class Stop:
    line: str
    exit_code: int


def describe_stop(exc: BaseException) -> Stop | None:
    """The one line and exit code of an interrupt or a full disk; None for anything else."""
    global _hint_of_stop, _signal_received
    hint, _hint_of_stop, _signal_received = _hint_of_stop, None, None
    tail = f"; {hint}" if hint else ""
    chain = list(_chain(exc))
    if any(isinstance(e, Terminated) for e in chain):
        return Stop(f"stopped by SIGTERM{tail}", 128 + signal.SIGTERM)
    if any(isinstance(e, KeyboardInterrupt) for e in chain) or type(exc).__name__ == "Abort":
        return Stop(f"interrupted{tail}", 130)
    full = disk_full_cause(exc)
    if full is not None:
        where = f" while writing {full.filename}" if full.filename else ""
        what = "disk quota exceeded" if full.errno != errno.ENOSPC else "no space left on device"
        return Stop(f"error: {what}{where}; free some space, then {hint or 'run the same command again'}", 1)
    return None
