"""The error tree and the one place where errors become exit codes.

Exit codes: 0 ok, 1 some items failed, 2 usage or config error, 130 interrupted.
"""

from __future__ import annotations

from capture.errors import CaptureError
from redact.errors import RedactError

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """A fatal pipeline-side error a user can act on."""

    exit_code = EXIT_USAGE


class ConfigError(PipelineError):
    """A config file is missing, malformed, or has an unknown/wrong/out-of-range key."""


class ItemsFailed(PipelineError):
    """The command finished but some items (frames, images) failed; details were reported."""

    exit_code = EXIT_ITEMS_FAILED


class AuditMismatch(PipelineError):
    """`audit verify` found a broken link or a file that does not match the manifest."""

    exit_code = EXIT_ITEMS_FAILED


def exit_code_for(exc: BaseException) -> int:
    """Map any exception to the process exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, PipelineError | CaptureError | RedactError):
        return int(exc.exit_code)
    return EXIT_USAGE if isinstance(exc, FileNotFoundError | PermissionError) else 1
