"""Integration with a real gpsd: gpsfake replays a real receiver log on loopback, the
daemon captures geotagged frames from a video-file camera; positions come from that log."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from capture_helpers import KARMA, free_port, gpsfake, vehicle_config

from capture.daemon import run_capture
from capture.geodesy import distance_m
from capture.geotag import geotag
from capture.gps.nmea import read_nmea_file
from capture.session import SessionReader, check_session

ROLLOVER = timedelta(weeks=1024)
LOG = "gps/nmea/haicom-305N.log"  # a moving receiver (up to 2.7 m/s), 68 fixes over 71 s


@pytest.mark.needs_gpsd
def test_daemon_with_gpsfake(tmp_path: Path, shared: Path) -> None:
    log = shared / LOG
    ref, _ = read_nmea_file(log)
    port = free_port()
    cfg = vehicle_config(
        tmp_path,
        camera={"source": "video", "uri": str(shared / KARMA), "fps": 10, "loop": True},
        gps={"source": "gpsd", "host": "127.0.0.1", "port": port, "reconnect_s": 0.5},
        trigger={"every_meters": 1.0, "min_speed_mps": 0.3},
    )
    stop = threading.Event()
    with gpsfake(log, port, cycle=0.03):
        timer = threading.Timer(9.0, stop.set)
        timer.start()
        res = run_capture(cfg, stop=stop, display=False)
        timer.cancel()
    assert res.session is not None
    s = check_session(res.session)
    r = SessionReader(res.session)
    frames = r.frames()
    assert s.status == "closed" and len(frames) >= 3, s
    fixes = r.fixes()
    assert len(fixes) >= 10
    # gpsd moves this 2007 receiver's dates by whole 1024-week GPS rollovers into the present.
    shift = next(k * ROLLOVER for k in range(3) if fixes[0].time - k * ROLLOVER in {f.time for f in ref})
    ref_by_time = {f.time + shift: f for f in ref}
    for fx in fixes:  # every journalled fix is one of the log's own fixes
        assert fx.time in ref_by_time
        assert abs(ref_by_time[fx.time].lat - fx.lat) <= 1e-6 and abs(ref_by_time[fx.time].lon - fx.lon) <= 1e-6
    for rec in frames:  # and every frame sits on the log's track at its time
        t = rec.time - shift
        assert ref[0].time <= t <= ref[-1].time
        g = geotag(ref, t, max_gap_s=cfg.gps.max_gap_s)
        assert rec.lat is not None and rec.lon is not None and g.lat is not None and g.lon is not None
        assert distance_m(rec.lat, rec.lon, g.lat, g.lon) < 0.05
        assert rec.position_source in ("fix", "interpolated")
