"""GPS sources behind one interface: an iterable of ``Fix`` (UTC time, position, speed,
course, fix quality, HDOP, satellites) with ``close()``, ``stats`` and ``last_error``.

- gpsd over its JSON protocol (``capture.gps.gpsd``), reconnecting;
- NMEA 0183 from a serial port or a file/stdin replay (``capture.gps.nmea``);
- GPX replay (``capture.gps.gpx``), real-time or as fast as possible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from capture.config import GpsSection
from capture.errors import GpsError
from capture.types import Fix


class GpsSource(Protocol):
    name: str

    def __iter__(self) -> Iterator[Fix]: ...

    def close(self) -> None: ...

    @property
    def stats(self) -> dict[str, int]: ...


def open_gps(cfg: GpsSection) -> GpsSource:
    """The GPS source a vehicle config names."""
    if cfg.source == "gpsd":
        from capture.gps.gpsd import GpsdSource

        return GpsdSource(cfg.host, cfg.port, reconnect_s=cfg.reconnect_s)
    if cfg.source == "nmea-serial":
        from capture.gps.nmea import nmea_serial_source

        return nmea_serial_source(cfg.device, cfg.baud)
    if cfg.path is None:
        raise GpsError(f"gps.source = {cfg.source!r} needs gps.path (a file)")
    if cfg.source == "nmea-file":
        from capture.gps.nmea import nmea_file_source

        return nmea_file_source(cfg.path, realtime=cfg.realtime)
    from capture.gps.gpx import GpxReplaySource

    return GpxReplaySource(cfg.path, realtime=cfg.realtime)
