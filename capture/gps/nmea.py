"""NMEA 0183 decoding (pynmea2) and NMEA sources: a file or stdin replay, or a serial port.

Real receivers send more than clean sentences: binary protocol packets on the same wire,
line noise, truncated sentences, bad checksums, empty fields while there is no fix, and
several talkers (GP, GN, GL, GA, BD, GB, ...). The decoder keeps only well-formed sentences
with a valid checksum (a sentence without one is accepted, as gpsd does), counts what it
skipped, and merges the sentences of one epoch (same UTC time of day) into one ``Fix``.
When the sentences of one epoch disagree on the position (some marine multiplexers mix
sources), the last one wins, as in gpsd.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, BinaryIO

import pynmea2

from capture.errors import GpsError
from capture.types import Fix

log = logging.getLogger(__name__)

KNOTS_TO_MPS = 1852.0 / 3600.0
KMH_TO_MPS = 1000.0 / 3600.0
# One printable sentence starting at '$' (or '!' for AIS), up to the next start or line end.
_SENTENCE_RE = re.compile(rb"[$!][\x20-\x7e]*?(?=[$!]|$)")
# GGA fix quality values that are real positions (7 manual input and 8 simulator are not).
_GGA_VALID = {1, 2, 3, 4, 5, 6}
# RMC/GNS mode indicator → GGA-style quality.
_MODE_TO_QUALITY = {"A": 1, "D": 2, "P": 3, "R": 4, "F": 5, "E": 6}
_POSITION_TYPES = ("RMC", "GGA", "GNS", "GLL")


@dataclass
class NmeaStats:
    """What the decoder saw; garbage and errors are counted, never raised."""

    sentences: int = 0
    checksum_errors: int = 0
    parse_errors: int = 0
    unsupported: int = 0
    no_checksum: int = 0
    garbage_bytes: int = 0
    no_fix: int = 0
    no_date: int = 0
    bad_values: int = 0
    fixes: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Epoch:
    tod: dtime
    types: set[str] = field(default_factory=set)
    lat: float | None = None
    lon: float | None = None
    alt: float | None = None
    speed: float | None = None
    course: float | None = None
    quality: int | None = None
    hdop: float | None = None
    satellites: int | None = None
    invalid: bool = False
    emitted: bool = False


def _f(v: Any) -> float | None:
    """A finite float from a field, or None for an empty / malformed one."""
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _i(v: Any) -> int | None:
    x = _f(v)
    return int(x) if x is not None else None


def _latlon(msg: Any) -> tuple[float, float] | None:
    """Position of a sentence with lat/lat_dir/lon/lon_dir fields, or None when empty."""
    if not getattr(msg, "lat", "") or not getattr(msg, "lon", ""):
        return None
    try:
        lat, lon = float(msg.latitude), float(msg.longitude)
    except (TypeError, ValueError, AttributeError):
        return None
    if msg.lat_dir not in ("N", "S") or msg.lon_dir not in ("E", "W"):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


class NmeaDecoder:
    """Turns a byte stream of NMEA (with noise) into fixes, one per epoch.

    A fix is emitted as soon as its epoch holds every position sentence type seen in the
    previous epoch (so no extra epoch of latency), else when a later epoch starts, else at
    ``finish()``. Dates come from RMC or ZDA; GGA/GLL/GNS times before any date are counted
    as ``no_date`` and dropped (we never guess a date).
    """

    def __init__(self) -> None:
        self.stats = NmeaStats()
        self._buf = b""
        self._date: date | None = None
        self._last_tod: dtime | None = None
        self._epoch: _Epoch | None = None
        self._pattern: set[str] = set()
        self._pending_speed: float | None = None
        self._pending_course: float | None = None

    # -- bytes in

    def feed(self, data: bytes) -> list[Fix]:
        """Decode complete lines in ``data`` (plus what was buffered); return new fixes."""
        self._buf += data
        *lines, self._buf = re.split(rb"\r\n|\n|\r", self._buf)
        if len(self._buf) > 4096:  # binary stream without line breaks: do not grow forever
            self.stats.garbage_bytes += len(self._buf)
            self._buf = b""
        out: list[Fix] = []
        for line in lines:
            out += self._line(line)
        return out

    def finish(self) -> list[Fix]:
        """Decode what is left and emit the last epoch."""
        out = self._line(self._buf) if self._buf else []
        self._buf = b""
        out += self._close_epoch()
        return out

    def _line(self, line: bytes) -> list[Fix]:
        if not line.strip() or line.startswith(b"#"):
            return []
        out: list[Fix] = []
        used = 0
        for m in _SENTENCE_RE.finditer(line):
            used += len(m.group(0))
            out += self.sentence(m.group(0).decode("ascii"))
        self.stats.garbage_bytes += len(line) - used
        return out

    # -- sentences in

    def sentence(self, text: str) -> list[Fix]:
        """Decode one sentence (``$..*hh``); malformed ones are counted and skipped."""
        text = text.strip()
        if "*" not in text:
            self.stats.no_checksum += 1
        try:
            msg = pynmea2.parse(text, check=False)
            if "*" in text:
                body, _, cs = text[1:].rpartition("*")
                if len(cs) < 2 or int(cs[:2], 16) != pynmea2.NMEASentence.checksum(body):
                    raise pynmea2.ChecksumError("bad checksum", text)
        except pynmea2.ChecksumError:
            self.stats.checksum_errors += 1
            return []
        except pynmea2.SentenceTypeError:
            self.stats.unsupported += 1
            return []
        except Exception:  # pynmea2 raises many types on malformed fields; all mean "skip it"
            self.stats.parse_errors += 1
            return []
        self.stats.sentences += 1
        kind = getattr(msg, "sentence_type", "")
        try:
            return self._handle(kind, msg)
        except (TypeError, ValueError, AttributeError, IndexError):
            self.stats.parse_errors += 1
            return []

    def _handle(self, kind: str, msg: Any) -> list[Fix]:
        if kind == "ZDA":
            d, m, y = _i(msg.day), _i(msg.month), _i(msg.year)
            if d and m and y and y > 1980:
                self._date = date(y, m, d)
            return []
        if kind == "VTG":
            spd = _f(msg.spd_over_grnd_kmph)
            spd = spd * KMH_TO_MPS if spd is not None else _scaled(_f(msg.spd_over_grnd_kts), KNOTS_TO_MPS)
            self._merge_motion(spd, _f(msg.true_track))
            return []
        if kind == "GSA":
            if self._epoch is not None and not self._epoch.emitted:
                h = _f(msg.hdop)
                if h is not None and self._epoch.hdop is None:
                    self._epoch.hdop = h
            return []
        if kind not in _POSITION_TYPES:
            return []
        tod = getattr(msg, "timestamp", None)
        if not isinstance(tod, dtime):
            if tod:  # a time field that is there but malformed
                self.stats.parse_errors += 1
            else:
                self.stats.no_fix += 1
            return []
        out: list[Fix] = []
        if kind == "RMC":
            ds = getattr(msg, "datestamp", None)
            if isinstance(ds, date):
                self._date = ds
        if self._epoch is None or self._epoch.tod != tod:
            out += self._close_epoch()
            self._roll_date(tod)
            self._epoch = _Epoch(tod=tod, speed=self._pending_speed, course=self._pending_course)
            self._pending_speed = self._pending_course = None
        ep = self._epoch
        ep.types.add(kind)
        pos = _latlon(msg)
        if kind == "RMC":
            valid = msg.status == "A" and getattr(msg, "mode_indicator", "A") != "N"
            if valid and pos:
                ep.lat, ep.lon = pos
                ep.speed = _scaled(_f(msg.spd_over_grnd), KNOTS_TO_MPS)
                c = _f(msg.true_course)
                ep.course = c if c is not None else ep.course
                if ep.quality is None:
                    ep.quality = _MODE_TO_QUALITY.get(getattr(msg, "mode_indicator", "") or "A", 1)
            else:
                ep.invalid = ep.invalid or msg.status == "V"
        elif kind == "GGA":
            q = _i(msg.gps_qual)
            if q in _GGA_VALID and pos:
                ep.lat, ep.lon = pos
                ep.quality = q
                ep.alt = _f(msg.altitude)
                ep.hdop = _f(msg.horizontal_dil)
                ep.satellites = _i(msg.num_sats)
            else:
                ep.invalid = True
        elif kind == "GNS":
            modes = str(getattr(msg, "mode_indicator", "") or "")
            q = next((_MODE_TO_QUALITY[c] for c in modes if c in _MODE_TO_QUALITY), None)
            if q is not None and pos:
                ep.lat, ep.lon = pos
                ep.quality = ep.quality or q
                ep.alt = ep.alt if ep.alt is not None else _f(msg.altitude)
                ep.hdop = ep.hdop if ep.hdop is not None else _f(msg.hdop)
                ep.satellites = ep.satellites if ep.satellites is not None else _i(msg.num_sats)
            else:
                ep.invalid = True
        elif kind == "GLL":
            if msg.status == "A" and pos and getattr(msg, "faa_mode", "A") != "N":
                ep.lat, ep.lon = pos
                ep.quality = ep.quality or 1
            else:
                ep.invalid = True
        if self._pattern and self._pattern <= ep.types:
            out += self._emit()
        return out

    def _merge_motion(self, speed: float | None, course: float | None) -> None:
        ep = self._epoch
        if ep is not None and not ep.emitted:
            ep.speed = ep.speed if ep.speed is not None else speed
            ep.course = ep.course if ep.course is not None else course
        else:  # VTG before the position sentences of its epoch
            self._pending_speed, self._pending_course = speed, course

    def _roll_date(self, tod: dtime) -> None:
        # A GGA just after midnight while the date still comes from the previous day's RMC.
        if self._date is not None and self._last_tod is not None:
            back = _secs(self._last_tod) - _secs(tod)
            if back > 12 * 3600:
                self._date += timedelta(days=1)
        self._last_tod = tod

    def _close_epoch(self) -> list[Fix]:
        ep = self._epoch
        if ep is None:
            return []
        out = [] if ep.emitted else self._emit()
        self._pattern = set(ep.types)
        self._epoch = None
        return out

    def _emit(self) -> list[Fix]:
        ep = self._epoch
        assert ep is not None
        ep.emitted = True
        if ep.lat is None or ep.lon is None:
            self.stats.no_fix += 1
            return []
        if self._date is None:
            self.stats.no_date += 1
            return []
        t = datetime.combine(self._date, ep.tod.replace(tzinfo=None), tzinfo=UTC)
        speed = ep.speed if ep.speed is not None and ep.speed >= 0 else None
        course = ep.course % 360.0 if ep.course is not None and 0 <= ep.course <= 720 else None
        try:
            fix = Fix(
                time=t, lat=ep.lat, lon=ep.lon, alt=ep.alt, speed=speed, course=course,
                fix_quality=ep.quality, hdop=ep.hdop if ep.hdop is None or ep.hdop >= 0 else None,
                satellites=ep.satellites,
            )
        except ValueError:
            self.stats.bad_values += 1
            return []
        self.stats.fixes += 1
        return [fix]


def _scaled(v: float | None, k: float) -> float | None:
    return v * k if v is not None else None


def _secs(t: dtime) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def decode_nmea_bytes(data: bytes) -> tuple[list[Fix], NmeaStats]:
    """Decode a whole capture; never raises on content."""
    dec = NmeaDecoder()
    fixes = dec.feed(data)
    fixes += dec.finish()
    return fixes, dec.stats


def read_nmea_file(path: Path) -> tuple[list[Fix], NmeaStats]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise GpsError(f"{path}: cannot read NMEA log: {e}") from e
    return decode_nmea_bytes(data)


# ---------------------------------------------------------------------------- sources


class NmeaStreamSource:
    """Fixes from an NMEA byte stream: a file or stdin replay (optionally paced by the fix
    times), or a serial port (pyserial)."""

    def __init__(self, name: str, opener: Any, *, realtime: bool = False) -> None:
        self.name = name
        self._opener = opener
        self._realtime = realtime
        self._stop = threading.Event()
        self.decoder = NmeaDecoder()
        self.last_error: str | None = None

    @property
    def stats(self) -> dict[str, int]:
        return self.decoder.stats.as_dict()

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Fix]:
        stream: BinaryIO = self._opener()
        first_fix: datetime | None = None
        start = _time.monotonic()
        try:
            while not self._stop.is_set():
                chunk = stream.readline() if hasattr(stream, "readline") else stream.read(4096)
                if not chunk:
                    if getattr(stream, "is_serial", False):
                        continue  # read timeout on a serial port: no data yet
                    break
                for fix in self.decoder.feed(chunk):
                    if self._realtime:
                        if first_fix is None:
                            first_fix, start = fix.time, _time.monotonic()
                        due = (fix.time - first_fix).total_seconds() - (_time.monotonic() - start)
                        if due > 0 and self._stop.wait(due):
                            return
                    yield fix
            if not self._stop.is_set():
                yield from self.decoder.finish()
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def nmea_file_source(path: Path | str, *, realtime: bool = False) -> NmeaStreamSource:
    """Replay an NMEA log (``-`` for stdin), as fast as possible or paced by fix times."""
    if str(path) == "-":
        return NmeaStreamSource("stdin", lambda: sys.stdin.buffer, realtime=realtime)
    p = Path(path)
    if not p.is_file():
        raise GpsError(f"{p}: NMEA log not found")
    return NmeaStreamSource(str(p), lambda: open(p, "rb"), realtime=realtime)


def nmea_serial_source(device: str, baud: int) -> NmeaStreamSource:
    """Read a receiver on a serial port (pyserial; 1 s read timeout so stop is responsive)."""

    def opener() -> BinaryIO:
        import serial

        try:
            port = serial.Serial(device, baudrate=baud, timeout=1.0)
        except (serial.SerialException, OSError) as e:
            raise GpsError(f"{device}: cannot open serial GPS at {baud} baud: {e}") from e
        port.is_serial = True
        return port

    return NmeaStreamSource(device, opener)
