"""The driver's one-line status display (rich), refreshed in place on a terminal and logged
every ``log_every_s`` seconds otherwise (the systemd journal), at INFO on the ``capture.status``
logger (``streetveil capture run`` shows the ``capture`` loggers' INFO by default)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

_QUALITY = {1: "GPS", 2: "DGPS", 3: "PPS", 4: "RTK", 5: "RTK float", 6: "DR", 7: "manual"}


@dataclass
class Status:
    state: str = "starting"
    session_id: str = "-"
    frames_kept: int = 0
    frames_seen: int = 0
    distance_m: float = 0.0
    fix_quality: int | None = None
    hdop: float | None = None
    satellites: int | None = None
    fix_age_s: float | None = None
    disk_free_mb: float | None = None
    camera_lost: bool = False
    last_error: str | None = None

    def line(self) -> str:
        if self.fix_quality is None or self.fix_age_s is None:
            fix = "no fix"
        else:
            fix = _QUALITY.get(self.fix_quality, f"q{self.fix_quality}")
            if self.hdop is not None:
                fix += f" hdop {self.hdop:.1f}"
            if self.satellites is not None:
                fix += f" {self.satellites} sats"
            if self.fix_age_s > 2:
                fix += f" ({self.fix_age_s:.0f} s old)"
        disk = f"{self.disk_free_mb / 1024:.1f} GB free" if self.disk_free_mb is not None else "disk ?"
        err = f" | last error: {self.last_error}" if self.last_error else ""
        cam = "CAMERA LOST | " if self.camera_lost else ""
        return (
            f"{self.state.upper()} {self.session_id} | {cam}kept {self.frames_kept}/{self.frames_seen} | "
            f"{self.distance_m / 1000:.2f} km | {fix} | {disk}{err}"
        )


class StatusDisplay:
    """Context manager: ``update()`` redraws the line on a terminal (at most ``refresh_hz``);
    without one (or with ``live=False``) it logs the line at the start, every ``log_every_s``
    seconds (0: never) and at the end."""

    def __init__(self, status: Status, *, log_every_s: float = 30.0, refresh_hz: float = 2.0,
                 live: bool = True) -> None:
        self.status = status
        self.log_every_s = log_every_s
        self.min_interval = 1.0 / refresh_hz
        self.live = live
        self._live: Any = None
        self._last = 0.0
        self._last_log: float | None = None

    def __enter__(self) -> StatusDisplay:
        import rich
        from rich.console import Console
        from rich.live import Live

        console: Console = rich.get_console()
        if self.live and console.is_terminal:
            self._live = Live(self.status.line(), console=console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._live is None:
            due = self._last_log is None or (self.log_every_s > 0 and now - self._last_log >= self.log_every_s)
            if force or due:
                self._last_log = now
                log.info("%s", self.status.line())
            return
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        from rich.text import Text

        self._live.update(Text(self.status.line(), overflow="ellipsis", no_wrap=True), refresh=True)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.update(force=True)
        if self._live is not None:
            self._live.__exit__(et, e, tb)
            self._live = None
