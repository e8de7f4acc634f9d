"""The driver's status line and the systemd unit."""

from __future__ import annotations

import configparser

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


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "scripts" / "streetveil-capture.service")
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert "capture run --config" in svc["ExecStart"] and svc["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
