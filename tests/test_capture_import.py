"""`capture import`: the GoPro clip with its GPX (8 h camera clock skew) and EXIF photos."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from capture_helpers import write_gpx
from conftest import CONFIGS, run_cli

from capture.errors import ImportTimeMismatch
from capture.geodesy import distance_m
from capture.gps.gpx import read_gpx_fixes
from capture.importer import ImportSettings, import_images, read_exif, suggest_offset
from capture.session import SessionMeta, SessionReader, check_session
from capture.types import Fix

VIDEO = "video-gopro/max-heromode.mp4"
GPX = "video-gopro/max-heromode.GPS5.gpx"
OFFSET = 28782.0  # creation_time 15:45:32 (local, labelled UTC) vs first GPSU 23:45:14 UTC
META = SessionMeta("import-test", "op", "purpose", "1", source="import-images")
# session.json must say who captured, why and under which notice (GUIDEBOOK "Basic stance").
WHO = ("--operator", "Example Road Survey Co., Ltd.", "--purpose", "road survey", "--notice-version", "2026-11-01")


def _track_at(track: list[Fix], t: datetime) -> tuple[float, float]:
    """The GPX track linearly interpolated at t (independent of capture.geotag)."""
    for a, b in itertools.pairwise(track):
        if a.time <= t <= b.time:
            f = (t - a.time) / (b.time - a.time)
            return a.lat + f * (b.lat - a.lat), a.lon + f * (b.lon - a.lon)
    raise AssertionError(f"{t} outside the track")


def test_gopro_import_with_time_offset(tmp_path: Path, shared: Path) -> None:
    r = run_cli("capture", "import", str(shared / VIDEO), "--gpx", str(shared / GPX), "--out", str(tmp_path),
                "--every-meters", "1", "--time-offset", str(OFFSET), *WHO)
    assert r.returncode == 0, r.stderr
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = check_session(session)
    assert s.status == "closed" and s.frames >= 8, s
    track = read_gpx_fixes(shared / GPX)
    frames = SessionReader(session).frames()
    start = datetime(2019, 11, 18, 15, 45, 32, tzinfo=UTC) + timedelta(seconds=OFFSET)
    for rec in frames:
        assert rec.lat is not None and rec.lon is not None
        lat, lon = _track_at(track, rec.time)
        assert distance_m(rec.lat, rec.lon, lat, lon) <= 2.0
        n = rec.extra["video_frame"]  # frame time = creation_time + pts + offset (29.97 fps)
        assert abs((rec.time - start).total_seconds() - n * 1001 / 30000) < 0.002
        assert (rec.width, rec.height) == (848, 480)
    for a, b in itertools.pairwise(frames):
        assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
        assert distance_m(a.lat, a.lon, b.lat, b.lon) >= 0.999
    doc = json.loads((session / "session.json").read_text())
    assert doc["source"] == "import-video" and doc["camera"]["clock_offset_s"] == -OFFSET
    assert (doc["operator"], doc["purpose"], doc["notice_version"]) == (WHO[1], WHO[3], WHO[5])


def test_gopro_import_without_offset_suggests_one(tmp_path: Path, shared: Path) -> None:
    r = run_cli("capture", "import", str(shared / VIDEO), "--gpx", str(shared / GPX), "--out", str(tmp_path), *WHO)
    assert r.returncode == 2
    assert "no frame falls inside the track" in r.stderr and "max-heromode.mp4" in r.stderr
    assert "8 h off" in r.stderr and "--time-offset +28800" in r.stderr
    assert "--time-offset +28782.000" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_suggestion_when_whole_hours_fit() -> None:
    t0 = datetime(2020, 1, 1, 9, 0, tzinfo=UTC)
    track = [Fix(time=t0 + timedelta(seconds=s), lat=35.0, lon=139.0) for s in range(0, 600, 10)]
    msg = suggest_offset(t0 - timedelta(hours=9) + timedelta(seconds=60), t0 - timedelta(hours=9, seconds=-120), track)
    assert "--time-offset +32400 puts the media inside the track" in msg


def test_import_usage_errors(tmp_path: Path, shared: Path) -> None:
    r = run_cli("capture", "import", str(shared / VIDEO), "--out", str(tmp_path))
    assert r.returncode == 2 and "needs --gpx" in r.stderr
    r = run_cli("capture", "import", str(tmp_path / "nope.mp4"), "--gpx", str(shared / GPX), "--out", str(tmp_path),
                *WHO)
    assert r.returncode == 2 and "nope.mp4" in r.stderr


@pytest.mark.parametrize(("given", "missing"), [
    ((), "--operator, --purpose, --notice-version"),
    (("--operator", "Example Road Survey Co., Ltd."), "--purpose, --notice-version"),
    (("--operator", "x", "--purpose", "road survey", "--notice-version", " "), "--notice-version"),
])
def test_import_requires_operator_purpose_and_notice_version(tmp_path: Path, shared: Path, given: tuple[str, ...],
                                                             missing: str) -> None:
    out = tmp_path / "out"
    r = run_cli("capture", "import", "--images", str(shared / "images-exif"), "--out", str(out), *given)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"missing {missing} (give them, or --config vehicle.toml" in r.stderr
    assert r.stderr.count("Error") == 1  # one clear usage error
    assert not out.exists()  # nothing written


def test_import_metadata_from_the_vehicle_config(tmp_path: Path, shared: Path) -> None:
    r = run_cli("capture", "import", "--images", str(shared / "images-exif"), "--out", str(tmp_path),
                "--config", str(CONFIGS / "vehicle.toml"), "--purpose", "bridge inspection")
    assert r.returncode == 0, r.stderr
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    doc = json.loads((session / "session.json").read_text())
    assert doc["operator"] == "Example Road Survey Co., Ltd." and doc["notice_version"] == "2026-11-01"
    assert doc["purpose"] == "bridge inspection"  # an option overrides the config


def test_exif_reading(shared: Path) -> None:
    info = read_exif(shared / "images-exif" / "DSC00001.JPG")
    # DateTimeOriginal 13:24:10 with OffsetTimeOriginal -07:00
    assert info.time == datetime(2018, 6, 8, 20, 24, 10, tzinfo=UTC)
    assert info.fix is not None
    assert info.fix.lat == pytest.approx(45 + 31 / 60 + 0.851 / 3600)
    assert info.fix.lon == pytest.approx(-(122 + 34 / 60 + 21.954 / 3600))
    assert info.fix.speed == pytest.approx(22.95 / 3.6) and info.fix.course == pytest.approx(270.89)


def test_import_images_with_exif_gps(tmp_path: Path, shared: Path) -> None:
    r = run_cli("capture", "import", "--images", str(shared / "images-exif"), "--out", str(tmp_path), *WHO)
    assert r.returncode == 0, r.stderr
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    frames = SessionReader(session).frames()
    # test_exif.jpg (2018-06-26, Malta) is far from the others and later: kept too.
    assert [f.extra["source_file"] for f in frames] == ["DSC00001.JPG", "DSC00497.JPG", "test_exif.jpg"]
    assert frames[0].position_source == "fix" and frames[0].width == 3840
    assert (session / frames[0].file).read_bytes() == (shared / "images-exif" / "DSC00001.JPG").read_bytes()


def test_import_images_with_gpx(tmp_path: Path, shared: Path) -> None:
    """A GPX through the two Sony photos' own GPS fixes: positions interpolated at their EXIF
    times land near the EXIF positions."""
    folder = tmp_path / "photos"
    folder.mkdir()
    fixes = []
    for name in ("DSC00001.JPG", "DSC00497.JPG"):
        (folder / name).write_bytes((shared / "images-exif" / name).read_bytes())
        fixes.append(read_exif(folder / name).fix)
    assert all(fixes)
    a, b = fixes
    assert a is not None and b is not None
    gpx = write_gpx(tmp_path / "t.gpx", [Fix(time=a.time - timedelta(seconds=5), lat=a.lat, lon=a.lon),
                                         Fix(time=b.time + timedelta(seconds=5), lat=b.lat, lon=b.lon)])
    res = import_images(folder, tmp_path / "out", META, ImportSettings(max_gap_s=600.0), gpx=gpx)
    frames = SessionReader(res.session).frames()
    assert len(frames) == 2 and all(f.position_source == "interpolated" for f in frames)
    for f, ref in zip(frames, fixes, strict=True):
        assert ref is not None and f.lat is not None and f.lon is not None
        assert distance_m(f.lat, f.lon, ref.lat, ref.lon) < 60  # 5 s along a 500 m, 8 min leg


def test_import_stores_no_fix_inside_a_privacy_zone(tmp_path: Path, shared: Path) -> None:
    """As in the daemon: the GPX's fixes inside a zone are counted, not stored (the nightly job
    draws the published track from the stored fixes)."""
    from capture.zones import zones_from_geojson

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((shared / "images-exif" / "DSC00001.JPG").read_bytes())
    a = read_exif(folder / "a.jpg").fix
    assert a is not None
    # A detour through a zone 1 km north of the photo, then back.
    track = [Fix(time=a.time + timedelta(seconds=s), lat=a.lat + dlat, lon=a.lon)
             for s, dlat in ((-5, 0.0), (60, 0.009), (120, 0.0002))]
    gpx = write_gpx(tmp_path / "t.gpx", track)
    zone = zones_from_geojson({"type": "Polygon", "coordinates": [[
        [a.lon - 0.001, a.lat + 0.008], [a.lon + 0.001, a.lat + 0.008], [a.lon + 0.001, a.lat + 0.01],
        [a.lon - 0.001, a.lat + 0.01], [a.lon - 0.001, a.lat + 0.008]]]})
    assert zone.contains(track[1].lat, track[1].lon) and not zone.contains(a.lat, a.lon)
    res = import_images(folder, tmp_path / "out", META, ImportSettings(max_gap_s=600.0), gpx=gpx, zones=zone)
    assert res.frames == 1 and res.counters["fixes_in_privacy_zone"] == 1
    stored = SessionReader(res.session).fixes()
    assert [f.time for f in stored] == [track[0].time, track[2].time]
    assert not any(zone.contains(f.lat, f.lon) for f in stored)
    gpx_text = (res.session / "track.gpx").read_text()
    assert gpx_text.count("<trkpt") == 2 and f"{track[1].lat}" not in gpx_text


def test_images_outside_track_exit_2(tmp_path: Path, shared: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((shared / "images-exif" / "DSC00001.JPG").read_bytes())
    gpx = write_gpx(tmp_path / "t.gpx", [Fix(time=datetime(2018, 6, 8, 12, 0, s, tzinfo=UTC), lat=45.5, lon=-122.5)
                                         for s in (0, 30)])
    with pytest.raises(ImportTimeMismatch, match="8 h off"):
        import_images(folder, tmp_path / "out", META, gpx=gpx)
