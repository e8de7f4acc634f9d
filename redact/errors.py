"""Errors raised by the redaction side."""

from __future__ import annotations


class RedactError(Exception):
    """A fatal redaction-side error (missing model file, bad detector spec)."""

    exit_code = 2


class ModelError(RedactError):
    """Model weights are missing, unreadable, or need an extra that is not installed."""


class ImageError(RedactError):
    """One image cannot be decoded or encoded. Per-image: callers report it as data."""

    exit_code = 1


def is_fatal(e: BaseException) -> bool:
    """Errors that end a whole batch (no model, no memory); every other error fails only the
    image or frame it happened to."""
    return isinstance(e, ModelError | MemoryError)
