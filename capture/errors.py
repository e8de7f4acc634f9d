"""Errors raised by the capture side. The CLI maps them to exit codes in one place."""

from __future__ import annotations


class CaptureError(Exception):
    """A fatal capture-side error a user can act on (bad file, bad device, bad session)."""

    exit_code = 2


class SessionError(CaptureError):
    """A session directory cannot be opened, written or read."""


class SessionInvalid(CaptureError):
    """`session check` found problems; carries the list of them."""

    exit_code = 1

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s)")


class GpsError(CaptureError):
    """A GPS source cannot be opened or read."""


class CameraError(CaptureError):
    """A camera source cannot be opened (after retries, where retrying makes sense)."""


class DecryptionError(CaptureError):
    """An encrypted frame or session key cannot be decrypted (wrong key, tampered data)."""


class ZoneError(CaptureError):
    """A zones file cannot be read or holds something other than valid WGS84 polygons."""


class ImportTimeMismatch(CaptureError):
    """No imported frame falls inside the GPS track: the clocks disagree (see the message)."""
