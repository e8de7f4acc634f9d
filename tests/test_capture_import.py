"""`capture import`: the GoPro clip with its GPX (8 h camera clock skew) and EXIF photos."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from capture_helpers import write_gpx
from conftest import CONFIGS, run_cli

from capture.errors import CaptureError, ImportTimeMismatch
from capture.exif import read_exif
from capture.geodesy import distance_m
from capture.gps.gpx import read_gpx_fixes
from capture.importer import TRACK_MARGIN_S, ImportSettings, import_images, suggest_offset
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


def test_decoded_frames_are_timed_like_the_demuxed_ones(shared: Path) -> None:
    """The frames the import decodes get exactly the times the overlap check and the session
    end were computed from (one pts origin: the stream's start time, else its first pts)."""
    from capture.importer import _iter_video, video_frame_times

    vt = video_frame_times(shared / VIDEO, OFFSET)
    decoded = [t for _, t, _ in _iter_video(shared / VIDEO, vt)]
    assert len(decoded) == len(vt.times) > 300 and decoded == sorted(vt.times)
    assert vt.times[0] == vt.start  # the GoPro stream starts at pts 0


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
    assert info.utc == datetime(2018, 6, 8, 20, 24, 10, tzinfo=UTC) and info.time is not None
    assert info.time.source == "offset" and info.time.wall == datetime(2018, 6, 8, 13, 24, 10)
    assert info.fix is not None
    assert info.fix.lat == pytest.approx(45 + 31 / 60 + 0.851 / 3600)
    assert info.fix.lon == pytest.approx(-(122 + 34 / 60 + 21.954 / 3600))
    assert info.fix.speed == pytest.approx(22.95 / 3.6) and info.fix.course == pytest.approx(270.89)


def test_import_images_with_exif_gps(tmp_path: Path, shared: Path) -> None:
    r = run_cli("capture", "import", "--images", str(shared / "images-exif"), "--out", str(tmp_path), *WHO)
    assert r.returncode == 0, r.stderr
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    frames = SessionReader(session).frames()
    # test_exif.jpg (Malta) has no zone for its camera time (2018-06-26 17:46:33) but GPS stamps
    # (2011-07-15 09:14:39 UTC): the GPS time is used, so it comes first; far away: kept too.
    assert [f.extra["source_file"] for f in frames] == ["test_exif.jpg", "DSC00001.JPG", "DSC00497.JPG"]
    assert frames[0].time == datetime(2011, 7, 15, 9, 14, 39, tzinfo=UTC)
    assert frames[1].position_source == "fix" and frames[1].width == 3840
    assert (session / frames[1].file).read_bytes() == (shared / "images-exif" / "DSC00001.JPG").read_bytes()


def _sony_photos(shared: Path, folder: Path) -> tuple[Fix, Fix]:
    """The two Sony photos (DSC00001/DSC00497) copied into a new ``folder``, and the GPS fixes
    their EXIF carries (both must have one)."""
    folder.mkdir()
    fixes = []
    for name in ("DSC00001.JPG", "DSC00497.JPG"):
        (folder / name).write_bytes((shared / "images-exif" / name).read_bytes())
        fixes.append(read_exif(folder / name).fix)
    a, b = fixes
    assert a is not None and b is not None
    return a, b


def test_import_images_with_gpx(tmp_path: Path, shared: Path) -> None:
    """A GPX through the two Sony photos' own GPS fixes: positions interpolated at their EXIF
    times land near the EXIF positions."""
    folder = tmp_path / "photos"
    fixes = _sony_photos(shared, folder)
    a, b = fixes
    gpx = write_gpx(tmp_path / "t.gpx", [Fix(time=a.time - timedelta(seconds=5), lat=a.lat, lon=a.lon),
                                         Fix(time=b.time + timedelta(seconds=5), lat=b.lat, lon=b.lon)])
    res = import_images(folder, tmp_path / "out", META, ImportSettings(max_gap_s=600.0), gpx=gpx)
    frames = SessionReader(res.session).frames()
    assert len(frames) == 2 and all(f.position_source == "interpolated" for f in frames)
    for f, ref in zip(frames, fixes, strict=True):
        assert f.lat is not None and f.lon is not None
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


# ---------------------------------------------------------------------------- time zones and the stored track


def _photo(src: Path, dst: Path, *, offsets: dict[int, str] | None = None, gps: bool = True,
           gps_time: bool = True) -> Path:
    """A small JPEG carrying ``src``'s EXIF with the offset tags replaced by ``offsets``; without
    ``gps`` no GPS IFD, without ``gps_time`` no GPS date/time stamps (the pixels do not matter)."""
    from PIL import Image

    ex = Image.open(src).getexif()
    sub = ex.get_ifd(0x8769)
    for tag in (0x9010, 0x9011, 0x9012):
        sub.pop(tag, None)
    sub.update(offsets or {})
    if not gps:
        ex.get_ifd(0x8825).clear()
    if not gps_time:
        ex.get_ifd(0x8825).pop(0x0007, None)
        ex.get_ifd(0x8825).pop(0x001D, None)
    shade = (sum(dst.name.encode()) * 97) % 256  # photos differ (the trigger drops near-duplicates)
    Image.new("RGB", (64, 48), (shade, 120, 255 - shade)).save(dst, "JPEG", exif=ex.tobytes())
    return dst


@pytest.mark.parametrize(("offsets", "gps", "utc", "source"), [
    ({0x9011: "-07:00"}, True, datetime(2018, 6, 8, 20, 24, 10, tzinfo=UTC), "offset"),  # OffsetTimeOriginal
    ({0x9010: "-07:00"}, True, datetime(2018, 6, 8, 20, 24, 10, tzinfo=UTC), "offset"),  # OffsetTime
    ({0x9011: "   :  "}, True, datetime(2018, 6, 8, 20, 24, 11, tzinfo=UTC), "gps"),  # unknown offset: GPS stamps
    ({}, True, datetime(2018, 6, 8, 20, 24, 11, tzinfo=UTC), "gps"),
    ({}, False, None, "none"),  # nothing says the zone: no UTC time
])
def test_exif_time_zone_rules(tmp_path: Path, shared: Path, offsets: dict[int, str], gps: bool,
                              utc: datetime | None, source: str) -> None:
    info = read_exif(_photo(shared / "images-exif" / "DSC00001.JPG", tmp_path / "a.jpg", offsets=offsets, gps=gps))
    assert info.time is not None and info.time.source == source and info.utc == utc
    assert (info.fix is not None) == gps


def test_photos_without_a_time_zone_need_one(tmp_path: Path, shared: Path) -> None:
    """A photo whose EXIF time carries no zone is never read as UTC: one usage error naming the
    file, nothing written; --timezone (or --time-offset) says how to read it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(shared / "images-exif" / "DSC00001.JPG", folder / "a.jpg", gps_time=False)
    _photo(shared / "images-exif" / "DSC00497.JPG", folder / "b.jpg", gps_time=False)
    out = tmp_path / "out"
    base = ("capture", "import", "--images", str(folder), "--out", str(out), *WHO)
    r = run_cli(*base)
    assert r.returncode == 2, r.stdout + r.stderr
    msg = " ".join(r.stderr.split())
    assert f"{folder / 'a.jpg'}: EXIF capture time 2018-06-08 13:24:10 has no time zone" in msg, msg
    assert "1 more image" in msg and "--timezone" in msg and "--time-offset" in msg
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(CaptureError, match="has no time zone"):
        import_images(folder, out, META)
    # Portland in June is UTC-7 (daylight saving time): the zone database knows.
    for extra in (("--timezone", "America/Los_Angeles"), ("--time-offset", "25200")):
        dest = tmp_path / extra[0].strip("-")
        r = run_cli(*base[:4], "--out", str(dest), *WHO, *extra)
        assert r.returncode == 0, r.stderr
        (session,) = [p for p in dest.iterdir() if p.is_dir()]
        frames = SessionReader(session).frames()
        assert [f.time for f in frames] == [datetime(2018, 6, 8, 20, 24, 10, tzinfo=UTC),
                                            datetime(2018, 6, 8, 20, 32, 28, tzinfo=UTC)]
        assert frames[0].position_source == "fix"  # the photo's EXIF GPS position, at that time
    r = run_cli(*base, "--timezone", "Mars/Olympus")
    assert r.returncode == 2 and "unknown time zone 'Mars/Olympus'" in r.stderr


def test_import_stores_only_the_track_around_the_media(tmp_path: Path, shared: Path) -> None:
    """A GPX of the whole day: only the fixes within the photos' time span plus the margin are
    stored in the session (and so in the published track)."""
    folder = tmp_path / "photos"
    a, b = _sony_photos(shared, folder)
    day = [Fix(time=a.time + timedelta(seconds=s), lat=a.lat + (b.lat - a.lat) * s / 498, lon=a.lon + (b.lon - a.lon) * s / 498)
           for s in range(-7200, 7200 + 498, 10)]
    gpx = write_gpx(tmp_path / "day.gpx", day)
    res = import_images(folder, tmp_path / "out", META, ImportSettings(max_gap_s=30.0), gpx=gpx)
    assert res.frames == 2
    stored = SessionReader(res.session).fixes()
    lo, hi = a.time - timedelta(seconds=TRACK_MARGIN_S), b.time + timedelta(seconds=TRACK_MARGIN_S)
    assert stored and all(lo <= f.time <= hi for f in stored)
    assert len(stored) == sum(lo <= f.time <= hi for f in day)
    assert res.counters["fixes_outside_media_span"] == len(day) - len(stored) > 1000
