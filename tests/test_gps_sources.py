"""GPX replay and the gpsd client (against a real gpsd started by gpsfake)."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from capture_helpers import CAR_GPX, dense_car_track, free_port, gpsfake, write_gpx

from capture.errors import GpsError
from capture.gps.gpsd import GpsdSource, fix_from_tpv
from capture.gps.gpx import GpxReplaySource, read_gpx_fixes
from capture.gps.nmea import read_nmea_file


def test_car_gpx(shared: Path) -> None:
    fixes = read_gpx_fixes(shared / CAR_GPX)
    assert len(fixes) > 100
    assert all(a.time < b.time for a, b in itertools.pairwise(fixes))
    assert fixes[0].alt == pytest.approx(211.15)


def test_gopro_untimed_samples_get_times(shared: Path) -> None:
    fixes = read_gpx_fixes(shared / "video-gopro" / "max-heromode.GPS5.gpx")
    assert len(fixes) == 191  # 11 timed GPSU stamps, the ~18 Hz samples between them spread evenly
    steps = [(b.time - a.time).total_seconds() for a, b in itertools.pairwise(fixes)]
    assert all(0.03 < s < 0.15 for s in steps)
    assert fixes[0].speed == pytest.approx(1.046)  # speed2d extension


def test_gpx_times_without_a_zone_are_utc_on_any_machine(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPX times are UTC by definition; one written without 'Z' must not take the reading
    machine's time zone (the vehicle and the cluster would disagree)."""
    import time
    from datetime import UTC, datetime

    path = shared / "gps" / "gpx" / "gpx1.1_with_all_fields.gpx"  # a trkpt time without a zone
    got = {}
    try:
        for tz in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            got[tz] = [f.time for f in read_gpx_fixes(path)]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert got["UTC"] == got["Asia/Tokyo"] == got["America/Los_Angeles"]
    assert datetime(2013, 1, 1, 12, 0, 4, tzinfo=UTC) in got["Asia/Tokyo"]


def test_gpx_without_times_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "untimed.gpx"
    p.write_text('<gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
                 '<trkpt lat="45.0" lon="14.0"/><trkpt lat="45.1" lon="14.1"/></trkseg></trk></gpx>')
    with pytest.raises(GpsError, match=r"untimed\.gpx: GPX has no track points with times"):
        read_gpx_fixes(p)


def test_not_gpx(tmp_path: Path) -> None:
    p = tmp_path / "x.gpx"
    p.write_text("<html>")
    with pytest.raises(GpsError, match="not a readable GPX"):
        read_gpx_fixes(p)


def test_gpx_replay_realtime_and_fast(shared: Path, tmp_path: Path) -> None:
    gpx = write_gpx(tmp_path / "dense.gpx", dense_car_track(shared, hz=2.0, seconds=3))
    src = GpxReplaySource(gpx, realtime=True)
    t0 = time.monotonic()
    got = []
    for f in src:
        got.append(f)
        if len(got) == 5:  # paced by the track's own times: 2 s
            break
    span = (got[-1].time - got[0].time).total_seconds()
    assert time.monotonic() - t0 == pytest.approx(span, abs=0.3)
    fast = list(GpxReplaySource(shared / CAR_GPX, realtime=False))
    assert len(fast) == len(read_gpx_fixes(shared / CAR_GPX))


@pytest.mark.parametrize(
    ("tpv", "expect"),
    [
        ({"class": "TPV", "mode": 1}, None),
        ({"class": "TPV", "mode": 3, "lat": 1.0, "lon": 2.0}, None),  # no time
        ({"class": "TPV", "mode": 3, "time": "2020-01-01T00:00:00.000Z", "lat": 1.0, "lon": 2.0, "status": 8}, None),
        ({"class": "TPV", "mode": 2, "time": "2020-01-01T00:00:00.500Z", "lat": 1.0, "lon": 2.0, "speed": 3.0,
          "track": 361.0, "altMSL": 5.0, "status": 2}, (1.0, 2.0, 3.0, 1.0, 5.0, 2)),
    ],
)
def test_fix_from_tpv(tpv: dict[str, object], expect: tuple[object, ...] | None) -> None:
    f = fix_from_tpv(tpv, {"hdop": 0.7, "uSat": 9})
    if expect is None:
        assert f is None
        return
    assert f is not None
    assert (f.lat, f.lon, f.speed, f.course, f.alt, f.fix_quality) == expect
    assert (f.hdop, f.satellites) == (0.7, 9)


@pytest.mark.needs_gpsd
def test_gpsd_client_reconnects_and_matches_log(shared: Path) -> None:
    """Start the client before gpsd exists (refused, retried), then a real gpsd replays a
    real log; the client's fixes are the log's fixes."""
    log = shared / "gps" / "nmea" / "haicom-305N.log"
    expected = {f.time: f for f in read_nmea_file(log)[0]}
    port = free_port()
    src = GpsdSource("127.0.0.1", port, reconnect_s=0.3)
    got = []

    def consume() -> None:
        for f in src:
            got.append(f)
            if len(got) >= 15:
                break

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    time.sleep(1.0)  # refused at least twice
    assert src.counters["connects"] == 0 and src.counters["disconnects"] >= 2
    with gpsfake(log, port, cycle=0.005):
        th.join(30)
    src.close()
    assert len(got) >= 15, src.counters
    for f in got:
        ref = next((expected[f.time - k * timedelta(weeks=1024)] for k in range(3)
                    if f.time - k * timedelta(weeks=1024) in expected), None)
        assert ref is not None, f.time
        assert abs(ref.lat - f.lat) <= 1e-6 and abs(ref.lon - f.lon) <= 1e-6
