"""Exceptions the engine raises for bad input, with messages meant for users.

Every user-facing failure (missing data, corrupt checkpoint, impossible
parameter) is one of these, so the CLI and the app can show the message
instead of a stack trace.
"""
from __future__ import annotations


class LFXError(Exception):
    """Base class: a problem the user can fix, described in plain words."""


class DatasetUnavailableError(LFXError):
    """A dataset is missing or malformed; the message names the paths and the fix."""


class CheckpointError(LFXError):
    """A checkpoint is missing, corrupt, foreign or does not match its architecture."""


class ParameterError(LFXError, ValueError):
    """An argument makes no sense (unknown name, non-positive size, ...)."""
