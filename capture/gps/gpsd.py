"""A gpsd client over its JSON protocol on TCP (default ``localhost:2947``), with reconnect.

Written over a plain socket: the protocol is line-delimited JSON (``?WATCH`` in, ``TPV`` /
``SKY`` reports out), and Debian's ``gps`` Python module is not installable from PyPI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from capture.types import Fix, parse_time

log = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true};\n'
# gpsd TPV "status" → NMEA GGA quality. 8 (simulated) is not a position we tag frames with.
_STATUS_TO_QUALITY = {0: 1, 1: 1, 2: 2, 3: 4, 4: 5, 5: 6, 6: 6, 7: 7, 9: 1}


def fix_from_tpv(tpv: dict[str, Any], sky: dict[str, Any] | None = None) -> Fix | None:
    """A ``Fix`` from one gpsd TPV report (plus the latest SKY for HDOP and satellites used).

    None when the report has no 2D/3D fix, no time, or a simulated position.
    """
    if tpv.get("class") != "TPV" or int(tpv.get("mode", 0) or 0) < 2:
        return None
    if "time" not in tpv or "lat" not in tpv or "lon" not in tpv:
        return None
    status = int(tpv.get("status", 1) or 0)
    if status not in _STATUS_TO_QUALITY:
        return None
    try:
        t = parse_time(str(tpv["time"])).astimezone(UTC)
        speed = tpv.get("speed")
        course = tpv.get("track")
        alt = tpv.get("altMSL", tpv.get("alt"))
        hdop = sky.get("hdop") if sky else None
        sats = sky.get("uSat") if sky else None
        return Fix(
            time=t,
            lat=float(tpv["lat"]),
            lon=float(tpv["lon"]),
            alt=float(alt) if alt is not None else None,
            speed=float(speed) if speed is not None and float(speed) >= 0 else None,
            course=float(course) % 360.0 if course is not None else None,
            fix_quality=_STATUS_TO_QUALITY[status],
            hdop=float(hdop) if hdop is not None else None,
            satellites=int(sats) if sats is not None else None,
        )
    except (TypeError, ValueError):
        return None


class GpsdSource:
    """Yields fixes from gpsd; on a lost or refused connection it logs, waits and reconnects
    until ``close()`` (a vehicle's gpsd may start after us or restart under us)."""

    def __init__(self, host: str = "localhost", port: int = 2947, *, reconnect_s: float = 2.0,
                 timeout_s: float = 5.0) -> None:
        self.name = f"gpsd {host}:{port}"
        self.host = host
        self.port = port
        self.reconnect_s = reconnect_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.counters = {"connects": 0, "disconnects": 0, "reports": 0, "bad_json": 0}
        self.last_error: str | None = None

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def close(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __iter__(self) -> Iterator[Fix]:
        while not self._stop.is_set():
            try:
                yield from self._session()
            except OSError as e:
                self.last_error = f"{self.name}: {e}"
                if not self._stop.is_set():
                    log.warning("gpsd connection lost (%s); reconnecting in %.1f s", e, self.reconnect_s)
            else:
                if not self._stop.is_set():
                    self.last_error = f"{self.name}: connection closed by gpsd"
                    log.warning("gpsd closed the connection; reconnecting in %.1f s", self.reconnect_s)
            self.counters["disconnects"] += 1
            self._stop.wait(self.reconnect_s)

    def _session(self) -> Iterator[Fix]:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        self._sock = sock
        try:
            sock.settimeout(1.0)  # wake up regularly to notice close()
            sock.sendall(WATCH)
            self.counters["connects"] += 1
            log.info("connected to gpsd at %s:%d", self.host, self.port)
            sky: dict[str, Any] | None = None
            buf = b""
            last: Fix | None = None
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        self.counters["bad_json"] += 1
                        continue
                    self.counters["reports"] += 1
                    if obj.get("class") == "SKY":
                        sky = {**(sky or {}), **{k: v for k, v in obj.items() if k in ("hdop", "uSat")}}
                        continue
                    fix = fix_from_tpv(obj, sky)
                    # gpsd reports one epoch several times as sentences arrive; pass on changes only.
                    if fix is not None and fix != last:
                        last = fix
                        yield fix
        finally:
            self._sock = None
            sock.close()
