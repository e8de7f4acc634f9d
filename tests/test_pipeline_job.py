"""`streetveil run` on a real local Dask cluster (worker processes), end to end: the oracle
against the serial path, the publish layout for GIS, the audit chain, reruns, a corrupt frame,
tampering, encrypted sessions and file:// URLs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import CONFIGS, JOB_FRAMES, read_ogr, run_cli

from pipeline import audit
from pipeline.config import NightlyConfig, load_config

NIGHTLY = str(CONFIGS / "nightly.toml")
LOCAL = ("--workers", "2", "--threads-per-worker", "1", "--no-progress")


def _images(sdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((sdir / "images").iterdir())}


@pytest.fixture(scope="module")
def dask_run(job_session: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dask-publish")
    r = run_cli("run", str(job_session), "--out", str(out), "--config", NIGHTLY, *LOCAL)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def test_oracle_dask_images_equal_serial_redact(dask_run: tuple[Path, str], serial_publication: Path,
                                                job_session: Path) -> None:
    out, _ = dask_run
    dask_imgs = _images(out / job_session.name)
    assert len(dask_imgs) == JOB_FRAMES
    assert dask_imgs == _images(serial_publication)
    assert (out / job_session.name / "manifest.json").read_bytes() == (serial_publication / "manifest.json").read_bytes()
    # The QA detections (boxes, scores) are the same too, and outside the published folder.
    (qa,) = (out / ".qa" / job_session.name).iterdir()
    assert qa.read_bytes() == (serial_publication.parent / ".qa" / job_session.name / qa.name).read_bytes()
    assert len(qa.read_bytes().splitlines()) == JOB_FRAMES


def test_summary_and_layout(dask_run: tuple[Path, str], job_session: Path) -> None:
    out, stdout = dask_run
    assert f"published {JOB_FRAMES}/{JOB_FRAMES} frames" in stdout
    assert "failed: 0" in stdout and "frames/s" in stdout and "wall time" in stdout
    sdir = out / job_session.name
    assert sorted(p.name for p in sdir.iterdir()) == [
        "audit.jsonl", "frames.geojson", "images", "manifest.json", "notice.html", "notice.txt", "track.geojson"]
    man = json.loads((sdir / "manifest.json").read_bytes())
    for rel, entry in man["files"].items():
        data = (sdir / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert "Example Road Survey Co., Ltd." in (sdir / "notice.html").read_text()
    assert not list(out.rglob(".tmp-*"))
    r = run_cli("audit", "verify", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: 1 session(s)")


def test_geojson_for_gis(dask_run: tuple[Path, str], job_session: Path) -> None:
    from capture.session import SessionReader

    out, _ = dask_run
    sdir = out / job_session.name
    recs = {r.frame_id: r for r in SessionReader(job_session).frames()}
    meta, f, geoms = read_ogr(sdir / "frames.geojson")
    assert meta["crs"] == "EPSG:4326" and meta["geometry_type"] == "Point"
    assert sorted(f["frame_id"]) == sorted(recs) and len(geoms) == JOB_FRAMES  # one point per image
    for i, fid in enumerate(f["frame_id"]):
        r = recs[fid]
        assert geoms[i].x == pytest.approx(r.lon, abs=1e-6) and geoms[i].y == pytest.approx(r.lat, abs=1e-6)
        assert f["heading"][i] == pytest.approx(r.heading, abs=0.01)
        assert f["image"][i] == f"images/{fid}.jpg" and (sdir / f["image"][i]).is_file()
        assert f["position_source"][i] == r.position_source
        assert f["faces"][i] >= 0 and f["plates"][i] >= 0
    assert sum(f["faces"]) > 0  # the sample has faces in every frame
    meta, tf, tgeoms = read_ogr(sdir / "track.geojson")
    assert tgeoms[0].geom_type == "LineString" and len(tgeoms[0].coords) >= 2
    assert tf["session_id"] == [job_session.name]


def test_published_exif_geotag(dask_run: tuple[Path, str], job_session: Path) -> None:
    from PIL import Image

    from capture.session import SessionReader

    out, _ = dask_run
    rec = SessionReader(job_session).frames()[2]
    gps = Image.open(out / job_session.name / "images" / f"{rec.frame_id}.jpg").getexif().get_ifd(0x8825)
    d, m, s = gps[2]
    assert d + m / 60 + s / 3600 == pytest.approx(rec.lat, abs=1e-5)
    assert gps[1] == "N" and gps[17] == pytest.approx(rec.heading, abs=0.01)


def test_audit_records(dask_run: tuple[Path, str], job_session: Path) -> None:
    out, _ = dask_run
    recs = audit.read_records(out / job_session.name / "audit.jsonl")
    run, frames, final = recs[0], recs[1:-1], recs[-1]
    assert run["type"] == "run" and run["who"]["user"] and run["who"]["host"]
    assert len(run["config_sha256"]) == 64 and len(run["model_hash"]) == 64
    assert run["software"]["name"] == "streetveil" and run["executor"]["workers"] == 2
    det = run["detectors"]
    assert det["detectors"] and all("weights_sha256" in d and "version" in d for d in det["detectors"])
    det_cfg = load_config(NIGHTLY, NightlyConfig, kind="nightly", environ={}).redact.detector
    from redact.detectors import plate_threshold

    assert det["thresholds"] == {"face": det_cfg.face_threshold, "plate": plate_threshold(det_cfg)}
    assert [r["type"] for r in frames] == ["frame"] * JOB_FRAMES
    for r in frames:
        assert r["status"] == "ok" and len(r["raw_sha256"]) == 64 and len(r["output_sha256"]) == 64
        assert {"faces", "plates", "faces_carried", "plates_carried", "method"} <= set(r)
        assert not {"box", "boxes", "xyxy", "detections"} & set(r)  # counts only, no boxes or crops
    assert final["type"] == "publish" and final["counts"]["published"] == JOB_FRAMES
    assert final["counts"]["faces"] == sum(r["faces"] for r in frames)
    index = audit.read_records(out / "audit-index.jsonl")
    assert [r["type"] for r in index] == ["run-start", "session-published", "run-end"]


def test_rerun_skips_and_is_byte_identical(dask_run: tuple[Path, str], job_session: Path,
                                           tmp_path: Path) -> None:
    out, _ = dask_run
    copy = tmp_path / "pub"
    shutil.copytree(out, copy)
    before = (copy / job_session.name / "manifest.json").read_bytes()
    r = run_cli("run", str(job_session), "--out", str(copy), "--config", NIGHTLY, "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"skipped (already done): {JOB_FRAMES}" in r.stdout
    assert (copy / job_session.name / "manifest.json").read_bytes() == before
    recs = audit.read_records(copy / job_session.name / "audit.jsonl")
    assert [r["type"] for r in recs].count("frame") == JOB_FRAMES  # no duplicate frame records
    assert run_cli("audit", "verify", str(copy)).returncode == 0


@pytest.mark.parametrize("target", ["image", "audit-line", "manifest", "extra-file"])
def test_tampering_fails_verify_and_names_it(dask_run: tuple[Path, str], job_session: Path, tmp_path: Path,
                                             target: str) -> None:
    out, _ = dask_run
    copy = tmp_path / "pub"
    shutil.copytree(out, copy)
    sdir = copy / job_session.name
    sid = job_session.name
    if target == "image":
        p = sdir / "images" / "000003.jpg"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
        expect = f"{sid}/images/000003.jpg: sha256 differs from the manifest"
    elif target == "audit-line":
        lines = (sdir / "audit.jsonl").read_bytes().splitlines()
        rec = json.loads(lines[2])
        rec["faces"] += 1
        lines[2] = audit.canonical(rec)
        (sdir / "audit.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
        expect = f"{sid}/audit.jsonl line 4: 'prev' does not match"
    elif target == "manifest":
        man = json.loads((sdir / "manifest.json").read_bytes())
        del man["files"]["notice.txt"]
        (sdir / "manifest.json").write_text(json.dumps(man))
        expect = f"{sid}/notice.txt: not listed in the manifest"
    else:
        (sdir / "images" / "raw-copy.jpg").write_bytes(b"\xff\xd8unredacted")
        expect = f"{sid}/images/raw-copy.jpg: not listed in the manifest"
    r = run_cli("audit", "verify", str(copy))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"FIRST PROBLEM: {expect}" in r.stderr, r.stderr


def test_corrupt_raw_frame_is_not_published(job_session: Path, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    shutil.copytree(job_session, sessions / job_session.name)
    sdir = sessions / job_session.name
    raw = sdir / "frames" / "000004.jpg"
    data = bytearray(raw.read_bytes())
    data[5000:5100] = bytes(100)
    raw.write_bytes(bytes(data))
    out = tmp_path / "pub"
    r = run_cli("run", str(sdir), "--out", str(out), "--config", NIGHTLY, *LOCAL)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed frame 000004: verify: frames/000004.jpg does not match the sha256" in r.stderr
    assert f"published {JOB_FRAMES - 1}/{JOB_FRAMES} frames (failed 1" in r.stdout
    pub = out / job_session.name
    assert sorted(_images(pub)) == [f"{i:06d}.jpg" for i in range(1, JOB_FRAMES + 1) if i != 4]
    recs = audit.read_records(pub / "audit.jsonl")
    bad = [x for x in recs if x.get("frame_id") == "000004"]
    assert len(bad) == 1 and bad[0]["status"] == "failed" and bad[0]["output_sha256"] is None
    assert "does not match the sha256" in bad[0]["error"]
    assert recs[-1]["counts"]["failed"] == 1
    _, f, _ = read_ogr(pub / "frames.geojson")
    assert "000004" not in f["frame_id"] and len(f["frame_id"]) == JOB_FRAMES - 1
    assert run_cli("audit", "verify", str(out)).returncode == 0


def test_encrypted_session_over_file_urls(job_session: Path, serial_publication: Path, tmp_path: Path) -> None:
    """Frames sealed for the cluster key, the private key from the environment (never from the
    session), input and output as file:// URLs: the same images as the plain session."""
    from capture.crypto import generate_keypair, load_public_key
    from pipeline.sample import make_sample_session

    generate_keypair(tmp_path / "cluster.pem", tmp_path / "cluster.pub.pem")
    sess = make_sample_session(tmp_path / "sessions", frames=JOB_FRAMES,
                               recipient_public_key=load_public_key(tmp_path / "cluster.pub.pem"))
    assert (sess / "frames" / "000001.jpg.enc").exists()
    out = tmp_path / "pub"
    args = ("run", f"file://{sess}", "--out", f"file://{out}", "--config", NIGHTLY, *LOCAL)
    r = run_cli(*args)
    assert r.returncode == 1, r.stdout + r.stderr  # no key: every frame fails closed
    assert "session is encrypted; give the cluster's private key" in r.stderr
    man = json.loads((out / sess.name / "manifest.json").read_bytes())
    assert not [f for f in man["files"] if f.startswith("images/")]
    r = run_cli(*args, env={"STREETVEIL_NIGHTLY__DECRYPT__PRIVATE_KEY": str(tmp_path / "cluster.pem")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert _images(out / sess.name) == _images(serial_publication)
    assert run_cli("audit", "verify", str(out)).returncode == 0
