"""Helpers for the capture tests: vehicle configs, a denser replay of a real car track,
and a gpsfake (real gpsd) instance on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from capture.config import VehicleConfig
from capture.geodesy import interpolate
from capture.gps.gpx import read_gpx_fixes
from capture.session import fixes_to_gpx
from capture.types import Fix
from pipeline.config import validate_config

CAR_GPX = "gps/gpx/around-visnjan-with-car.gpx"
KARMA = "video-gopro/karma.mp4"


def vehicle_config(base: Path, **sections: dict[str, Any]) -> VehicleConfig:
    """A validated VehicleConfig with test defaults, overridden per section."""
    data: dict[str, Any] = {
        "vehicle": {"id": "test-veh"},
        "camera": {"source": "video", "fps": 10},
        "gps": {"source": "gpx"},
        "trigger": {"every_meters": 5.0},
        "session": {"root": str(base / "sessions"), "operator": "Test Roads Ltd.",
                    "purpose": "test capture", "notice_version": "2026-11-01", "disk_reserve_mb": 1},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return validate_config(data, VehicleConfig, source="(test)", base_dir=base)


def write_vehicle_toml(path: Path, **sections: dict[str, Any]) -> Path:
    """The same as a TOML file (for the CLI in a subprocess)."""
    cfg = vehicle_config(path.parent, **sections)
    lines = []
    for name, sec in cfg.model_dump(mode="json").items():
        lines.append(f"[{name}]")
        for k, v in sec.items():
            if v is None:
                continue
            lines.append(f"{k} = {_toml(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dense_car_track(shared: Path, hz: float = 5.0, start_index: int = 12, seconds: float = 13.0) -> list[Fix]:
    """The real car drive (1 Hz stretch from 06:17:05), resampled to ``hz`` by linear
    interpolation between its own consecutive points, so a replay loses little to latency."""
    real = read_gpx_fixes(shared / CAR_GPX)[start_index:]
    out: list[Fix] = []
    t0 = real[0].time
    step = timedelta(seconds=1.0 / hz)
    t = t0
    i = 0
    while t <= t0 + timedelta(seconds=seconds):
        while i + 1 < len(real) and real[i + 1].time < t:
            i += 1
        a, b = real[i], real[min(i + 1, len(real) - 1)]
        span = (b.time - a.time).total_seconds()
        f = 0.0 if span <= 0 else min(1.0, (t - a.time).total_seconds() / span)
        lat, lon = interpolate(a.lat, a.lon, b.lat, b.lon, f)
        alt = None if a.alt is None or b.alt is None else a.alt + f * (b.alt - a.alt)
        out.append(Fix(time=t, lat=lat, lon=lon, alt=alt, fix_quality=1))
        t += step
    return out


def write_gpx(path: Path, fixes: list[Fix]) -> Path:
    path.write_text(fixes_to_gpx(fixes, path.stem))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gpsfake(log: Path, port: int, *, cycle: float = 0.02, timeout: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """A real gpsd (via gpsfake) replaying ``log`` once on 127.0.0.1:``port``."""
    exe = shutil.which("gpsfake")
    if exe is None:
        raise RuntimeError("gpsfake not installed (Debian gpsd-clients; scripts/test.sh installs it)")
    proc = subprocess.Popen(
        [exe, "-1", "-q", "-P", str(port), "-c", str(cycle), "-W", str(int(timeout)), str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"gpsfake exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        else:
            raise RuntimeError("gpsfake did not start listening")
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)
