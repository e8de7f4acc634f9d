"""Retention: `streetveil purge` deletes raw frames only of sessions whose publication
verifies and covers them, with an audit record; encrypted sessions are crypto-shredded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CONFIGS, JOB_FRAMES, run_cli

from capture.session import check_session
from pipeline import audit
from pipeline.config import NightlyConfig, load_config
from pipeline.job import JobOptions, run_serial
from pipeline.retention import parse_age
from pipeline.verify import verify_tree

NIGHTLY = str(CONFIGS / "nightly.toml")


def _publish(root: Path, out: Path, env_key: Path | None = None) -> None:
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    if env_key is not None:
        cfg = cfg.model_copy(update={"decrypt": cfg.decrypt.model_copy(update={"private_key": env_key})})
    s = run_serial(JobOptions(sessions=(str(root),), out=str(out), config=cfg, progress=False, threads=1))
    assert s.counts()["failed"] == 0


@pytest.fixture
def published(job_session: Path, serial_publication: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(sessions root with a copy of the job session, its publish folder) — the work area of
    the serial oracle is reused, so no frame is detected again."""
    root = tmp_path / "sessions"
    shutil.copytree(job_session, root / job_session.name)
    out = tmp_path / "pub"
    shutil.copytree(serial_publication.parent / ".work", out / ".work")
    _publish(root, out)
    return root, out


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("36h", 129600), ("1.5w", 907200), ("90m", 5400)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text).total_seconds() == seconds


def test_purge_after_verified_publication(published: tuple[Path, Path]) -> None:
    root, out = published
    sess = next(root.iterdir())
    frames = sorted((sess / "frames").iterdir())
    assert len(frames) == JOB_FRAMES
    # The sample drive ended 2026-11-25; with 7 days it is still within retention.
    r = run_cli("purge", str(root), "--raw-older-than", "3650d", "--publish-dir", str(out))
    assert r.returncode == 0 and "within the retention period" in r.stdout
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out), "--dry-run")
    assert r.returncode == 0 and f"would purge {sess.name}: {JOB_FRAMES} raw frames" in r.stdout
    assert len(list((sess / "frames").iterdir())) == JOB_FRAMES
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"purged {sess.name}: {JOB_FRAMES} raw frames" in r.stdout
    assert list((sess / "frames").iterdir()) == []
    assert (sess / "frames.jsonl").exists()  # records stay: no pixels in them
    summary = check_session(sess)  # deliberate deletions are not damage
    assert summary.deleted_frames == JOB_FRAMES
    rec = audit.read_records(out / sess.name / "audit.jsonl")[-1]
    assert rec["type"] == "purge" and rec["frames_deleted"] == JOB_FRAMES and not rec["crypto_shredded"]
    assert {f["sha256"] for f in rec["frames"]} == {
        json.loads(x)["sha256"] for x in (sess / "frames.jsonl").read_text().splitlines()}
    assert rec["who"]["user"] and rec["time"]
    assert verify_tree(out).ok
    # A second purge has nothing to do; a rerun of the job leaves the published set alone.
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out))
    assert "nothing left to delete" in r.stdout
    before = (out / sess.name / "manifest.json").read_bytes()
    r = run_cli("run", str(sess), "--out", str(out), "--config", NIGHTLY, "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "raw frames purged: the published set is final" in r.stdout
    assert (out / sess.name / "manifest.json").read_bytes() == before


def test_purge_refuses_unverified_or_incomplete(published: tuple[Path, Path]) -> None:
    root, out = published
    sess = next(root.iterdir())
    img = out / sess.name / "images" / "000002.jpg"
    good = img.read_bytes()
    img.write_bytes(good[:-10])
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out))
    assert r.returncode == 0
    assert f"kept    {sess.name}: publication does not verify: {sess.name}/images/000002.jpg" in r.stdout
    img.write_bytes(good)
    # A frame captured after the publication (here: a record appended) is not covered yet.
    lines = (sess / "frames.jsonl").read_text().splitlines()
    extra = json.loads(lines[-1])
    shutil.copy(sess / extra["file"], sess / "frames" / "000099.jpg")
    extra.update(frame_id="000099", file="frames/000099.jpg", time="2026-11-25T01:31:59.000Z")
    (sess / "frames.jsonl").write_text("\n".join([*lines, json.dumps(extra)]) + "\n")
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out))
    assert "1 raw frame(s) not covered by the publication" in r.stdout and "000099" in r.stdout
    assert len(list((sess / "frames").iterdir())) == JOB_FRAMES + 1
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(tmp := out.parent / "empty"))
    assert r.returncode == 2  # the publish folder must exist
    tmp.mkdir()
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(tmp))
    assert f"kept    {sess.name}: not published" in r.stdout


def test_purge_goes_on_past_an_unreadable_session(published: tuple[Path, Path]) -> None:
    """One damaged session is reported (exit 1), not a reason to keep every other raw frame."""
    root, out = published
    sess = next(root.iterdir())
    broken = root / "00000000T000000Z-broken"  # sorted first: reached before the good one
    (broken / "frames").mkdir(parents=True)
    (broken / "session.json").write_text('{"format": "streetveil-session", ')
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"purged {sess.name}: {JOB_FRAMES} raw frames" in r.stdout
    assert f"error   {broken.name}: cannot read session: " in r.stdout and "session.json" in r.stdout
    assert list((sess / "frames").iterdir()) == []
    assert "1 session(s) could not be read" in r.stderr


def test_purge_encrypted_session_crypto_shreds(tmp_path: Path) -> None:
    from capture.crypto import generate_keypair, load_public_key
    from pipeline.sample import make_sample_session

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    root = tmp_path / "sessions"
    sess = make_sample_session(root, frames=3, recipient_public_key=load_public_key(tmp_path / "k.pub.pem"))
    out = tmp_path / "pub"
    _publish(root, out, env_key=tmp_path / "k.pem")
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "session key (crypto-shredding)" in r.stdout
    assert not (sess / "session.key").exists() and list((sess / "frames").iterdir()) == []
    rec = audit.read_records(out / sess.name / "audit.jsonl")[-1]
    assert rec["crypto_shredded"] and len(rec["key_sha256"]) == 64 and "crypto-shredding" in rec["note"]
    assert verify_tree(out).ok
    assert check_session(sess).key_shredded
