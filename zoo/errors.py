"""Errors a user can act on that several layers of ``zoo`` raise, kept apart from the code that
raises them so that the ``zoo`` command can catch them without importing torch."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model; the message names the file."""


class TrainingError(ValueError):
    """The run cannot go on (a NaN or inf loss). A ValueError, so the CLI shows one sentence."""
