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
