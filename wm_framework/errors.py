"""Errors that the CLI turns into one clear line and an exit code.

``WMUsageError`` is bad input (a recipe, a path, an option): exit code 2.
``WMRuntimeError`` is a failure while doing valid work: exit code 1.
"""

from __future__ import annotations


class WMError(Exception):
    """Base class: ``str(err)`` is the one line the user sees."""

    exit_code = 1


class WMUsageError(WMError):
    """Bad input: a recipe, store, checkpoint, option or component name. Exit code 2."""

    exit_code = 2


class WMRuntimeError(WMError):
    """A failure while running valid work (a NaN loss, a crashed worker). Exit code 1."""

    exit_code = 1


class RecipeError(WMUsageError):
    """A recipe failed validation; ``problems`` holds every ``section.key: message`` line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
