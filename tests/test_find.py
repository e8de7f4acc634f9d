"""`streetveil find`: raw and published frames by time and place, and deleting the raw ones
with a journal entry and an audit record. Expectations are computed here with the geodesy
functions on the frame records themselves."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_cli

from capture.geodesy import distance_m, offset_m
from capture.session import SessionReader
from capture.types import FrameRecord
from pipeline import audit
from pipeline.errors import ConfigError
from pipeline.find import FindQuery, find_frames, parse_point, parse_radius, parse_when

T0 = datetime(2026, 11, 25, 1, 30, tzinfo=UTC)
HOME = (35.68000, 139.76000)


def _tiny_jpeg(i: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (i * 10 % 255, 80, 120)).save(buf, "JPEG")
    return buf.getvalue()


def _session(root: Path, name: str, start: datetime, north_m: float, *, no_pos: tuple[int, ...] = ()) -> Path:
    """20 frames, 1 s and 4 m apart, driving north past HOME (starting ``north_m`` from it)."""
    from capture.session import SessionMeta, SessionWriter

    meta = SessionMeta(vehicle_id=name, operator="Example Road Survey Co., Ltd.", purpose="find test",
                       notice_version="2026-11-01", source="sample")
    w = SessionWriter.create(root, meta, start=start)
    for i in range(20):
        t = start + timedelta(seconds=i)
        if i in no_pos:
            w.add_frame(_tiny_jpeg(i), time=t, position_source="none")
            continue
        lat, lon = offset_m(HOME[0], HOME[1], north_m + 4.0 * i, 3.0)
        w.add_frame(_tiny_jpeg(i), time=t, position_source="fix", lat=lat, lon=lon)
    return w.close(end=start + timedelta(seconds=20))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "sessions"
    _session(r, "van-1", T0, -40.0, no_pos=(9, 10))
    _session(r, "van-2", T0 + timedelta(hours=2), -60.0)
    return r


def _expected(root: Path, q: FindQuery) -> set[tuple[str, str]]:
    out = set()
    for p in sorted(root.iterdir()):
        if not (p / "session.json").exists():
            continue
        reader = SessionReader(p)
        for r in reader.frames():
            if q.start is not None and not (q.start <= r.time <= q.end):  # type: ignore[operator]
                continue
            if q.near is not None:
                if r.lat is None or r.lon is None:
                    continue
                if distance_m(q.near[0], q.near[1], r.lat, r.lon) > float(q.radius_m or 0):
                    continue
            out.add((reader.session_id, r.frame_id))
    return out


@pytest.mark.parametrize(("radius", "between"), [
    (30.0, None),
    (12.0, (T0, T0 + timedelta(seconds=12))),
    (500.0, (T0 + timedelta(hours=1), T0 + timedelta(hours=3))),
    (None, (T0 + timedelta(seconds=5), T0 + timedelta(seconds=11))),
])
def test_find_returns_exactly_the_frames_in_the_window(root: Path, radius: float | None,
                                                       between: tuple[datetime, datetime] | None) -> None:
    q = FindQuery(near=HOME if radius else None, radius_m=radius, start=between[0] if between else None,
                  end=between[1] if between else None)
    res = find_frames(root, q)
    got = {(f.session_id, f.frame_id) for f in res.frames}
    assert got == _expected(root, q)
    assert got  # every case finds something
    for f in res.frames:
        assert f.raw_present and f.raw_file and Path(f.raw_file).is_file() and f.published is None
        if radius:
            assert f.distance_m is not None and f.distance_m <= radius
    assert res.sessions_scanned == 2


def test_frames_without_position_are_never_near_but_are_counted(root: Path) -> None:
    q = FindQuery(near=HOME, radius_m=5000.0, start=T0, end=T0 + timedelta(seconds=30))
    res = find_frames(root, q)
    assert {f.frame_id for f in res.frames if f.session_id.endswith("van-1")} == \
        {f"{i:06d}" for i in range(1, 21)} - {"000010", "000011"}
    assert res.no_position_in_window == 2
    q = FindQuery(start=T0 + timedelta(seconds=9), end=T0 + timedelta(seconds=9))  # time only: listed
    res = find_frames(root, q)
    assert [(f.frame_id, f.lat) for f in res.frames] == [("000010", None)]


def test_cli_table_json_and_delete(root: Path, tmp_path: Path) -> None:
    args = ("find", str(root), "--near", f"{HOME[0]},{HOME[1]}", "--radius", "0.012km",
            "--between", "2026-11-25T10:30:00+09:00", "2026-11-25T01:30:12Z")
    q = FindQuery(near=HOME, radius_m=12.0, start=T0, end=T0 + timedelta(seconds=12))
    want = _expected(root, q)
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {(f["session_id"], f["frame_id"]) for f in doc["frames"]} == want
    r = run_cli(*args)
    assert r.returncode == 0 and f"{len(want)} frame(s) in 2 session(s)" in r.stdout
    sid, _ = next(iter(want))
    assert sid in r.stdout

    r = run_cli(*args, "--delete", "--reason", "resident asked for deletion of images of their house",
                "--requester-ref", "DEL-42")
    assert r.returncode == 0, r.stderr
    assert f"deleted {len(want)} raw frame(s)" in r.stdout
    for s, fid in want:
        p = root / s
        rec: FrameRecord = next(x for x in SessionReader(p).frames() if x.frame_id == fid)
        assert not (p / rec.file).exists()
    journal = [json.loads(x) for x in (root / sid / "deletions.jsonl").read_text().splitlines()]
    assert {j["frame_id"] for j in journal} == {f for s, f in want if s == sid}
    assert all(j["reason"] == "request" and j["ref"] == "DEL-42" for j in journal)
    chain = audit.read_records(root / "audit.jsonl")
    assert [c["type"] for c in chain] == ["raw-delete"]
    assert chain[0]["frames_deleted"] == len(want) and chain[0]["requester_ref"] == "DEL-42"
    assert str(HOME[0]) not in json.dumps(chain[0])  # the point asked about is not recorded
    assert run_cli("audit", "verify", str(root)).returncode == 0
    # The frames are still found (records stay), now without raw data; others are untouched.
    doc = json.loads(run_cli(*args, "--json").stdout)
    assert {(f["session_id"], f["frame_id"]) for f in doc["frames"]} == want
    assert not any(f["raw_present"] for f in doc["frames"])
    others = [x for p in root.iterdir() if (p / "session.json").exists() for x in SessionReader(p).frames()]
    assert sum((root / x.file).exists() is False for x in others) >= len(want)
    # A second deletion (the other van), then tampering with the first record is caught.
    r = run_cli("find", str(root), "--near", f"{HOME[0]},{HOME[1]}", "--radius", "10m", "--between",
                "2026-11-25T03:00:00Z", "2026-11-25T04:00:00Z", "--delete", "--reason", "second request")
    assert r.returncode == 0 and "deleted" in r.stdout, r.stderr
    assert [c["type"] for c in audit.read_records(root / "audit.jsonl")] == ["raw-delete", "raw-delete"]
    assert run_cli("audit", "verify", str(root)).returncode == 0
    text = (root / "audit.jsonl").read_text().replace("DEL-42", "DEL-43")
    (root / "audit.jsonl").write_text(text)
    r = run_cli("audit", "verify", str(root))
    assert r.returncode == 1 and "audit.jsonl line 2: 'prev' does not match" in r.stderr


def test_published_copies_are_listed_and_the_deletion_recorded_there(job_session: Path,
                                                                      serial_publication: Path,
                                                                      tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    shutil.copytree(job_session, root / job_session.name)
    pub = tmp_path / "pub"
    shutil.copytree(serial_publication.parent, pub)
    recs = SessionReader(root / job_session.name).frames()
    near = recs[3]
    args = ("find", str(root), "--near", f"{near.lat},{near.lon}", "--radius", "6m", "--publish-dir", str(pub))
    q = FindQuery(near=(float(near.lat or 0), float(near.lon or 0)), radius_m=6.0)
    want = _expected(root, q)
    doc = json.loads(run_cli(*args, "--json").stdout)
    assert {(f["session_id"], f["frame_id"]) for f in doc["frames"]} == want and len(want) >= 2
    for f in doc["frames"]:
        assert f["published"] == str(pub / job_session.name / "images" / f"{f['frame_id']}.jpg")
    r = run_cli(*args, "--delete", "--reason", "leak report", "--requester-ref", "LEAK-1")
    assert r.returncode == 0, r.stderr
    last = audit.read_records(pub / job_session.name / "audit.jsonl")[-1]
    assert last["type"] == "raw-delete" and {x["frame_id"] for x in last["frames"]} == {f for _, f in want}
    # The published chain (handed to the GIS team) has ids and hashes; why, who asked and the
    # query stay in the sessions root's chain, which it names by the sha256 of the record.
    assert not {"reason", "requester_ref", "query"} & set(last)
    root_chain = (root / "audit.jsonl").read_bytes().splitlines()
    assert last["root_record_sha256"] == audit.line_hash(root_chain[-1])
    assert json.loads(root_chain[-1])["reason"] == "leak report"
    assert run_cli("audit", "verify", str(pub)).returncode == 0
    # Published images are a separate decision (request add --remove); the raw ones are gone.
    assert all((pub / job_session.name / "images" / f"{f}.jpg").exists() for _, f in want)
    # A session no longer under the root is still found through its publication.
    shutil.rmtree(root / job_session.name)
    (root / "placeholder").mkdir()
    doc = json.loads(run_cli(*args, "--json").stdout)
    assert {(f["session_id"], f["frame_id"]) for f in doc["frames"]} == want
    assert not any(f["raw_present"] for f in doc["frames"])


@pytest.mark.parametrize(("text", "metres"), [("30m", 30.0), ("0.5km", 500.0), (" 12.5 M", 12.5)])
def test_parse_radius(text: str, metres: float) -> None:
    assert parse_radius(text) == metres


@pytest.mark.parametrize("text", ["30", "30 ft", "-3m", "km", "0m"])
def test_parse_radius_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--radius"):
        parse_radius(text)


def test_parse_time_and_point() -> None:
    assert parse_when("2026-11-25T10:30:00+09:00", "--between T1") == T0
    with pytest.raises(ConfigError, match="no time zone"):
        parse_when("2026-11-25T10:30:00", "--between T1")
    with pytest.raises(ConfigError, match="not an ISO 8601"):
        parse_when("yesterday", "--between T1")
    assert parse_point("35.68,139.76") == (35.68, 139.76)
    for bad in ("35.68", "91,0", "a,b"):
        with pytest.raises(ConfigError, match="--near"):
            parse_point(bad)
    with pytest.raises(ConfigError, match="second time is before"):
        FindQuery(start=T0, end=T0 - timedelta(seconds=1))
    with pytest.raises(ConfigError, match="say where"):
        FindQuery()


def test_cli_naive_time_is_a_usage_error(root: Path) -> None:
    r = run_cli("find", str(root), "--between", "2026-11-25T10:30:00", "2026-11-25T11:00:00Z")
    assert r.returncode == 2 and "no time zone" in r.stderr
    r = run_cli("find", str(root), "--near", "35.68,139.76", "--delete")
    assert r.returncode == 2 and "--delete needs --reason" in r.stderr
