"""Session format v1: writer → reader → checker, failure cases, crash recovery, encryption."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli

from capture.crypto import generate_keypair, load_private_key, load_public_key
from capture.errors import DecryptionError, SessionError, SessionInvalid
from capture.session import SessionMeta, SessionReader, SessionWriter, check_session
from capture.types import Fix

T0 = datetime(2026, 11, 26, 1, 0, 0, tzinfo=UTC)
META = SessionMeta(vehicle_id="veh-t", operator="Op", purpose="Test", notice_version="v1")


def _jpeg(i: int) -> bytes:
    img = np.full((48, 64, 3), (i * 17) % 255, np.uint8)
    cv2.putText(img, str(i), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 0, 0), 2)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _write_session(root: Path, n: int = 5, **kw: object) -> Path:
    w = SessionWriter.create(root, META, start=T0, **kw)  # type: ignore[arg-type]
    for i in range(n):
        t = T0 + timedelta(seconds=i)
        w.add_fix(Fix(time=t, lat=35.0 + i * 1e-4, lon=139.0, speed=5.0, course=0.0, fix_quality=1))
        w.add_frame(_jpeg(i), time=t + timedelta(milliseconds=500), position_source="interpolated",
                    lat=35.0 + i * 1e-4, lon=139.0, heading=0.0, speed=5.0)
    return w.close()


def test_roundtrip_and_check(tmp_path: Path) -> None:
    d = _write_session(tmp_path)
    s = check_session(d)
    assert s.frames == 5 and s.fixes == 5 and s.status == "closed"
    assert s.distance_m == pytest.approx(4 * 11.1, rel=0.02)
    r = SessionReader(d)
    frames = r.frames()
    assert [f.frame_id for f in frames] == ["000001", "000002", "000003", "000004", "000005"]
    assert r.read_frame(frames[2]) == _jpeg(2)
    assert frames[0].time == T0 + timedelta(milliseconds=500)
    assert len(r.fixes()) == 5
    gpx = (d / "track.gpx").read_text()
    assert gpx.count("<trkpt") == 5


def test_session_files_are_readable_by_the_batch_group_only(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        d = _write_session(tmp_path, n=2)
    finally:
        os.umask(old)
    files = [p for p in d.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"session.json", "frames.jsonl", "track.jsonl", "track.gpx", "000001.jpg"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p  # not 0600 (the batch user), not world


def test_flush_journals_fixes_without_rewriting_track_gpx(tmp_path: Path) -> None:
    """Flushes (once a second while capturing) only fsync the journal: a GPX rewritten from the
    whole journal on each of them costs more with every fix of a long drive. track.gpx is made
    from the journal at close (and at recovery after a crash)."""
    w = SessionWriter.create(tmp_path, META, start=T0)
    for i in range(300):
        w.add_fix(Fix(time=T0 + timedelta(seconds=i), lat=35.0 + i * 1e-5, lon=139.0))
        if i % 50 == 0:
            w.flush()
    w.flush()
    assert not (w.path / "track.gpx").exists()
    assert len(SessionReader(w.path).fixes()) == 300  # readers use the journal
    d = w.close()
    assert (d / "track.gpx").read_text().count("<trkpt") == 300


def test_times_must_increase_in_writer(tmp_path: Path) -> None:
    w = SessionWriter.create(tmp_path, META, start=T0)
    w.add_frame(_jpeg(0), time=T0, position_source="none")
    with pytest.raises(SessionError, match="not after"):
        w.add_frame(_jpeg(1), time=T0, position_source="none")
    w.close()


def _frames_lines(d: Path) -> list[str]:
    return (d / "frames.jsonl").read_text().splitlines(keepends=True)


@pytest.mark.parametrize("damage", ["delete", "modify", "time", "garbage", "bad-lat"])
def test_check_finds_damage(tmp_path: Path, damage: str) -> None:
    d = _write_session(tmp_path)
    lines = _frames_lines(d)
    if damage == "delete":
        (d / "frames" / "000003.jpg").unlink()
        expect = "000003.jpg is missing"
    elif damage == "modify":
        p = d / "frames" / "000002.jpg"
        p.write_bytes(p.read_bytes()[:-10] + b"x" * 10)
        expect = "does not match its sha256"
    elif damage == "time":
        rec = json.loads(lines[3])
        rec["time"] = json.loads(lines[1])["time"]
        lines[3] = json.dumps(rec) + "\n"
        (d / "frames.jsonl").write_text("".join(lines))
        expect = "does not increase"
    elif damage == "garbage":
        lines.insert(2, "this is not json\n")
        (d / "frames.jsonl").write_text("".join(lines))
        expect = "not valid JSON"
    else:
        rec = json.loads(lines[0])
        rec["lat"] = 123.0
        lines[0] = json.dumps(rec) + "\n"
        (d / "frames.jsonl").write_text("".join(lines))
        expect = "lat"
    with pytest.raises(SessionInvalid) as e:
        check_session(d)
    assert any(expect in p for p in e.value.problems), e.value.problems
    r = run_cli("session", "check", str(d))
    assert r.returncode == 1
    assert expect in r.stderr


@pytest.mark.parametrize(("key", "value"), [("file", "frames/../../outside.jpg"), ("file", "../outside.jpg"),
                                            ("file", "frames/.."), ("frame_id", "../000001")])
def test_reader_refuses_records_pointing_out_of_the_session(tmp_path: Path, key: str, value: str) -> None:
    """Purge and takedowns unlink ``session / rec.file`` and publish ``images/<frame_id>.jpg``:
    a record naming anything else is an invalid record, never a path to follow."""
    d = _write_session(tmp_path / "s")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"not yours")
    lines = _frames_lines(d)
    rec = json.loads(lines[0])
    rec[key] = value
    lines[0] = json.dumps(rec) + "\n"
    (d / "frames.jsonl").write_text("".join(lines))
    with pytest.raises(SessionError, match=f"line 1: invalid record: {key}"):
        SessionReader(d).frames()
    with pytest.raises(SessionInvalid):
        check_session(d)
    assert outside.read_bytes() == b"not yours"


def test_torn_last_line_is_reported_not_fatal(tmp_path: Path) -> None:
    d = _write_session(tmp_path)
    with open(d / "frames.jsonl", "a") as f:
        f.write('{"frame_id": "000006", "time": "2026-11-')
    s = check_session(d)
    assert s.torn_tail and s.frames == 5
    r = run_cli("session", "check", str(d))
    assert r.returncode == 0, r.stderr
    assert "torn" in r.stdout
    assert len(SessionReader(d).frames()) == 5


def test_recover_after_crash(tmp_path: Path) -> None:
    w = SessionWriter.create(tmp_path, META, start=T0)
    for i in range(3):
        w.add_frame(_jpeg(i), time=T0 + timedelta(seconds=i), position_source="none")
    w.flush()
    d = w.path
    # Simulate a crash: an orphan frame, a temp file, a torn record; session left open.
    (d / "frames" / "000004.jpg").write_bytes(_jpeg(4))
    (d / "frames" / ".tmp-abc").write_bytes(b"partial")
    with open(d / "frames.jsonl", "a") as f:
        f.write('{"frame_id": "0000')
    assert json.loads((d / "session.json").read_text())["status"] == "open"
    w2 = SessionWriter.recover(d)
    assert w2.counters["recovered_orphan_frames"] == 1
    assert w2.counters["recovered_temp_files"] == 1
    rec = w2.add_frame(_jpeg(9), time=T0 + timedelta(seconds=9), position_source="none")
    assert rec.frame_id == "000004"
    w2.close()
    s = check_session(d)
    assert s.frames == 4 and not s.torn_tail
    assert json.loads((d / "session.json").read_text())["recovered"] is True


@pytest.mark.parametrize("kind", ["x25519", "rsa"])
def test_encrypted_session(tmp_path: Path, kind: str) -> None:
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    if kind == "x25519":
        generate_keypair(priv, pub)
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    d = _write_session(tmp_path / "s", recipient_public_key=load_public_key(pub))
    blob = (d / "frames" / "000001.jpg.enc").read_bytes()
    assert not blob.startswith(b"\xff\xd8")  # not a JPEG on disk
    assert check_session(d).encrypted
    r = SessionReader(d, private_key=load_private_key(priv))
    f = r.frames()[1]
    assert r.read_frame(f) == _jpeg(1)
    with pytest.raises(DecryptionError, match="private key"):
        SessionReader(d).read_frame(f)
    # Crypto-shredding: without session.key nothing can be read.
    shutil.move(d / "session.key", tmp_path / "gone")
    with pytest.raises(DecryptionError, match="session key is gone"):
        SessionReader(d, private_key=load_private_key(priv)).read_frame(f)


def test_deleted_frames_are_not_damage(tmp_path: Path) -> None:
    from capture.session import Deletions, delete_frames

    d = _write_session(tmp_path)
    r = SessionReader(d)
    recs = r.frames()
    delete_frames(d, [recs[1], recs[3]], reason="request", ref="REQ-1")
    assert not (d / recs[1].file).exists() and (d / recs[0].file).exists()
    s = check_session(d)
    assert s.deleted_frames == 2 and s.frames == 5
    assert Deletions.load(d).frame_ids == {"000002", "000004"}
    # A frame that vanished without a journal entry is still damage.
    (d / recs[0].file).unlink()
    with pytest.raises(SessionInvalid, match="problem"):
        check_session(d)


def test_shredded_key_is_not_damage(tmp_path: Path) -> None:
    from capture.session import shred_session_key

    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    generate_keypair(priv, pub)
    d = _write_session(tmp_path / "s", recipient_public_key=load_public_key(pub))
    entry = shred_session_key(d, reason="retention")
    assert entry["action"] == "shred-key" and not (d / "session.key").exists()
    s = check_session(d)
    assert s.key_shredded
    with pytest.raises(DecryptionError):
        SessionReader(d, private_key=load_private_key(priv)).read_frame(SessionReader(d).frames()[0])
    with pytest.raises(SessionError, match=r"no session\.key"):
        shred_session_key(d, reason="retention")
