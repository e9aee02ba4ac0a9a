"""Every exception flowillower raises, under one base class.

Each message says what went wrong *and* what to do about it.
"""

from __future__ import annotations


class FlowillowerError(Exception):
    """Base class of all flowillower errors."""


class NoActiveRunError(FlowillowerError):
    """A call needed a run but none is active (and none could be started)."""


class ArgCastError(FlowillowerError, ValueError):
    """A `--kwargs name=value` could not be cast to the type of the default."""


class UnsupportedValueError(FlowillowerError, TypeError):
    """A logged value has a type flowillower cannot store faithfully."""


class InvalidNameError(FlowillowerError, ValueError):
    """A key or run name is empty or otherwise unusable."""


class RunNotFoundError(FlowillowerError, LookupError):
    """No run matches the given id, prefix or name."""


class InvalidRunRefError(RunNotFoundError):
    """A run reference that cannot name a run: a path, `..`, empty, hidden, too long."""


class StoreError(FlowillowerError):
    """The store directory is missing, unreadable or damaged."""


class FilterSyntaxError(FlowillowerError, ValueError):
    """A filter expression could not be parsed."""


class GitError(FlowillowerError):
    """A git command failed; the message carries the command and git's stderr."""
