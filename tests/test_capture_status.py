"""The driver's status line, its log without a terminal (the systemd journal), and the
systemd unit."""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from capture_helpers import KARMA, dense_car_track, write_gpx, write_vehicle_toml
from conftest import ROOT

from capture.status import Status


def test_status_line_shows_what_the_driver_needs() -> None:
    s = Status(state="recording", session_id="S1", frames_kept=12, frames_seen=300, distance_m=1234.0,
               fix_quality=2, hdop=0.9, satellites=11, fix_age_s=0.3, disk_free_mb=20480,
               last_error="camera 0: frame grab failed")
    line = s.line()
    for part in ("RECORDING", "kept 12/300", "1.23 km", "DGPS hdop 0.9 11 sats", "20.0 GB free",
                 "last error: camera 0: frame grab failed"):
        assert part in line, (part, line)
    assert "no fix" in Status().line()
    assert "(5 s old)" in Status(fix_quality=1, fix_age_s=5.0).line()
    assert "CAMERA LOST" in Status(camera_lost=True).line() and "CAMERA LOST" not in Status().line()


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "scripts" / "streetveil-capture.service")
    return unit


def test_systemd_unit() -> None:
    unit = _unit()
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert "capture run --config" in svc["ExecStart"] and svc["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def _unit_args() -> list[str]:
    argv = shlex.split(_unit()["Service"]["ExecStart"])
    return argv[argv.index("run") + 1:]


def test_journal_gets_a_periodic_status_and_state_changes(tmp_path: Path, shared: Path) -> None:
    """Run as the unit runs it (its arguments, no terminal, no -v) but logging every 1 s: the
    status line shows up at the default log level, and losing and regaining the GPS fix are
    logged when they happen."""
    fixes = dense_car_track(shared, seconds=4.0)
    gap = timedelta(seconds=3)  # the receiver goes silent for 3 s (> max_gap_s 2 s) after 1.4 s
    track = fixes[:8] + [replace(f, time=f.time + gap) for f in fixes[8:]]
    gpx = write_gpx(tmp_path / "gap.gpx", track)
    toml = write_vehicle_toml(tmp_path / "vehicle.toml",
                              camera={"source": "video", "uri": str(shared / KARMA), "fps": 10},
                              gps={"source": "gpx", "path": str(gpx), "realtime": True, "max_gap_s": 2.0})
    args = _unit_args()
    args[args.index("--config") + 1] = str(toml)
    args[args.index("--status-every") + 1] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "capture", "run", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    time.sleep(7.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    status = [ln for ln in out.splitlines() if "RECORDING" in ln and " | kept " in ln]
    assert len(status) >= 4, out  # at the start, then every second
    assert "GPS: first fix" in out, out
    assert "GPS fix lost: none for 2 s" in out, out
    assert out.index("GPS fix lost") < out.index("GPS: fix back after 3 s"), out
