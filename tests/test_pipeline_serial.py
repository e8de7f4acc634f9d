"""Job logic through the serial path (the same task functions, no Dask): temporal carry,
planning and keys, exclusion zones, frames without a position, a frame that cannot be
decoded, and a rerun that redoes it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CONFIGS, JOB_FRAMES, read_ogr, run_cli

from pipeline import audit
from pipeline.carry import carry_boxes, covered, grow, neighbour_order
from pipeline.config import NightlyConfig, load_config
from pipeline.job import JobOptions, run_serial
from pipeline.plan import make_batches, redact_key
from pipeline.verify import verify_tree

# ---------------------------------------------------------------------------- carry (pure)


@pytest.mark.parametrize(
    ("index", "n", "k", "expect"),
    [(0, 5, 1, [1]), (2, 5, 1, [1, 3]), (4, 5, 1, [3]), (2, 5, 2, [1, 3, 0, 4]), (0, 1, 3, []), (1, 3, 0, [])],
)
def test_neighbour_order(index: int, n: int, k: int, expect: list[int]) -> None:
    assert neighbour_order(index, n, k) == expect


def test_grow_and_covered() -> None:
    b = np.array([10, 10, 30, 20], np.float32)
    assert grow(b, 2.0, 100, 100).tolist() == [0, 5, 40, 25]
    assert grow(b, 1.0, 25, 100).tolist() == [10, 10, 25, 20]  # clipped to the image
    assert covered(b, np.array([[0, 0, 25, 25]], np.float32))  # 75 % inside
    assert not covered(b, np.array([[0, 0, 15, 25]], np.float32))  # 25 % inside
    assert not covered(b, np.zeros((0, 4), np.float32))


def test_carry_boxes() -> None:
    own_xy = np.array([[100, 100, 140, 140]], np.float32)
    own_cls = np.array([0], np.uint8)
    prev = (np.array([[102, 100, 142, 140], [500, 300, 560, 320]], np.float32), np.array([0.9, 0.8], np.float32),
            np.array([0, 1], np.uint8))  # a face we already have, a plate we missed
    nxt = (np.array([[505, 300, 565, 320], [100, 100, 140, 140]], np.float32), np.array([0.7, 0.6], np.float32),
           np.array([1, 1], np.uint8))  # the same missed plate, and a plate where we have a face
    xy, score, cls = carry_boxes(own_xy, own_cls, [prev, nxt], expand=1.5, width=1280, height=720)
    assert cls.tolist() == [1, 1]  # the plate once (the second copy is covered), the other-class box
    assert xy[0].tolist() == [485.0, 295.0, 575.0, 325.0] and score.tolist() == pytest.approx([0.8, 0.6])
    empty = carry_boxes(own_xy, own_cls, [], expand=1.5, width=10, height=10)
    assert [len(a) for a in empty] == [0, 0, 0]


# ---------------------------------------------------------------------------- planning


def test_batches_and_windows() -> None:
    assert make_batches(5, 2) == ((0, 2), (2, 4), (4, 5))
    assert make_batches(0, 8) == ()


def test_redact_key_ignores_machine_fields() -> None:
    base = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={}).redact
    det = base.detector
    other_machine = base.model_copy(update={"detector": det.model_copy(update={"threads": 7, "weights": Path("/x/w.onnx")})})
    assert redact_key(other_machine) == redact_key(base)
    stricter = base.model_copy(update={"detector": det.model_copy(update={"face_threshold": 0.5})})
    assert redact_key(stricter) != redact_key(base)


def test_config_zones_have_one_loader(tmp_path: Path) -> None:
    """``[publish] exclusion_zones`` is read by one function, for the job and for re-rendering
    by request alike: its test, the sha256 of the bytes read, errors naming key and file."""
    import pipeline.requests as requests_mod
    from pipeline.errors import PipelineError
    from pipeline.job import config_zones

    zones = tmp_path / "zones.geojson"
    zones.write_text(json.dumps({"type": "Polygon", "coordinates": [[[139.0, 35.0], [139.1, 35.0], [139.1, 35.1],
                                                                     [139.0, 35.1], [139.0, 35.0]]]}))
    contains, sha = config_zones(_cfg(exclusion_zones=zones))
    assert contains is not None and contains(35.05, 139.05) and not contains(35.2, 139.05)
    assert sha == hashlib.sha256(zones.read_bytes()).hexdigest()
    assert config_zones(_cfg()) == (None, None)
    with pytest.raises(PipelineError, match=r"\[publish\] exclusion_zones .*missing.geojson: zones file not found"):
        config_zones(_cfg(exclusion_zones=tmp_path / "missing.geojson"))
    assert not hasattr(requests_mod, "_config_zones")  # the copy it had is gone


# ---------------------------------------------------------------------------- serial job runs


def _cfg(**publish: Any) -> NightlyConfig:
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    return cfg.model_copy(update={"publish": cfg.publish.model_copy(update=publish)})


def _run(session: Path, out: Path, cfg: NightlyConfig) -> Any:
    return run_serial(JobOptions(sessions=(str(session),), out=str(out), config=cfg, progress=False, threads=1))


@pytest.fixture
def session_copy(job_session: Path, serial_publication: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A writable copy of the job session, and a publish folder seeded with the serial run's
    work area (so unchanged frames are not detected again)."""
    s = tmp_path / "sessions" / job_session.name
    shutil.copytree(job_session, s)
    out = tmp_path / "pub"
    shutil.copytree(serial_publication.parent / ".work", out / ".work")
    return s, out


def _rewrite_records(session: Path, fn) -> None:  # type: ignore[no-untyped-def]
    lines = (session / "frames.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    fn(recs)
    (session / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _images(sdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((sdir / "images").iterdir())}


def test_exclusion_zones_and_frames_without_position(session_copy: tuple[Path, Path],
                                                     serial_publication: Path) -> None:
    session, out = session_copy
    pos: dict[str, Any] = {}

    def drop_position(recs: list[dict[str, Any]]) -> None:
        pos.update(recs[4])
        r = recs[1]
        r.update(position_source="none", lat=None, lon=None, altitude=None)

    _rewrite_records(session, drop_position)
    lat, lon, d = pos["lat"], pos["lon"], 2e-5  # a ~4 m square around frame 000005
    zones = out.parent / "zones.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "resident request 17"}, "geometry": {
            "type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
                                                [lon - d, lat + d], [lon - d, lat - d]]]}}]}))
    s = _run(session, out, _cfg(exclusion_zones=zones))
    oc = s.sessions[0]
    assert oc.excluded == {"exclusion-zone": 1, "no-position": 1}
    assert (oc.published, oc.failed) == (JOB_FRAMES - 2, 0)
    sdir = out / session.name
    _, f, geoms = read_ogr(sdir / "frames.geojson")
    assert "000005" not in f["frame_id"] and "000002" not in f["frame_id"]
    assert not (sdir / "images" / "000005.jpg").exists()
    recs = audit.read_records(sdir / "audit.jsonl")
    ex = {r["frame_id"]: r for r in recs if r.get("status") == "excluded"}
    assert ex["000005"]["reason"] == "exclusion-zone" and "lat" not in ex["000005"]  # place not logged
    assert ex["000002"]["reason"] == "no-position"
    # The frames left out stay in the carry neighbourhood: what was seen in them is blurred in the
    # published frames next to them (000001, 000003, 000004, 000006) exactly as in a run that
    # left nothing out, so every published image equals the oracle's.
    oracle = _images(serial_publication)
    assert _images(sdir) == {k: v for k, v in oracle.items() if k not in ("000002.jpg", "000005.jpg")}
    for r in ex.values():
        assert not {"lat", "lon", "heading"} & set(r)
        assert r["context_detection"] == "ok"  # detected, never published: its boxes reached its neighbours
    assert recs[-1]["counts"]["excluded_zone"] == 1 and recs[-1]["counts"]["excluded_no_position"] == 1
    # The run record names the zone files that decided it, by hash.
    run = recs[0]
    assert run["type"] == "run" and run["exclusion_zones"] == str(zones)
    assert run["exclusion_zones_sha256"] == hashlib.sha256(zones.read_bytes()).hexdigest()
    assert run["request_zones_sha256"] is None  # no zone added by request in this folder
    assert verify_tree(out).ok

    # Without zones a frame without a position is published, with a null geometry.
    s = _run(session, out, _cfg())
    oc = s.sessions[0]
    assert (oc.published, oc.excluded) == (JOB_FRAMES, {})
    # Every result is cached by its key: all frames but 2 (now without GPS in its EXIF) have the
    # same inputs as in the serial oracle run whose work area this folder started from.
    assert oc.skipped == JOB_FRAMES - 1
    _, f, geoms = read_ogr(sdir / "frames.geojson")
    i = f["frame_id"].index("000002")
    assert geoms[i] is None and f["position_source"][i] == "none"
    assert sum(g is not None for g in geoms) == JOB_FRAMES - 1
    from PIL import Image

    assert not Image.open(sdir / "images" / "000002.jpg").getexif().get_ifd(0x8825)  # no GPS in EXIF
    assert Image.open(sdir / "images" / "000003.jpg").getexif().get_ifd(0x8825)
    assert verify_tree(out).ok


def test_deleted_raw_frame_keeps_its_publication_and_carry(session_copy: tuple[Path, Path],
                                                           serial_publication: Path) -> None:
    """A frame whose raw file was deleted on purpose after publication (find --delete,
    deletions.jsonl) is never read, never failed; its published image stays as it is, and its
    detections stay carry context for its neighbours even once the work cache is gone (from the
    publication's QA detections)."""
    from capture.session import SessionReader, delete_frames

    session, out = session_copy
    oracle = _images(serial_publication)
    _run(session, out, _cfg())
    sdir = out / session.name
    assert _images(sdir) == oracle
    rec = next(r for r in SessionReader(session).frames() if r.frame_id == "000004")
    delete_frames(session, [rec], reason="request", ref="CASE-1")
    for _ in ("with the work cache", "without it"):
        s = _run(session, out, _cfg())
        oc = s.sessions[0]
        assert (oc.published, oc.failed, oc.failures, oc.excluded, oc.kept) == (JOB_FRAMES, 0, [], {}, 1)
        assert _images(sdir) == oracle  # 000004 kept; 000003 and 000005 still carry its boxes
        recs = audit.read_records(sdir / "audit.jsonl")
        assert recs[-1]["counts"]["kept_raw_deleted"] == 1
        assert [r["status"] for r in recs if r.get("frame_id") == "000004"] == ["ok"]  # no failure, no churn
        assert verify_tree(out).ok
        shutil.rmtree(out / ".work")


def test_deleted_raw_frame_never_published_is_unavailable_not_failed(session_copy: tuple[Path, Path]) -> None:
    """Deleted before it was ever published and nothing kept of its detections: left out
    (raw-deleted), its file never opened, "unavailable" as carry context, not a failure."""
    from capture.session import SessionReader, delete_frames

    session, out = session_copy
    rec = next(r for r in SessionReader(session).frames() if r.frame_id == "000004")
    delete_frames(session, [rec], reason="request", ref="CASE-1")
    shutil.rmtree(out / ".work")
    s = _run(session, out, _cfg())
    oc = s.sessions[0]
    assert (oc.published, oc.failed, oc.failures, oc.excluded) == (JOB_FRAMES - 1, 0, [], {"raw-deleted": 1})
    (x,) = [r for r in audit.read_records(out / session.name / "audit.jsonl") if r.get("frame_id") == "000004"]
    assert x["status"] == "excluded" and x["reason"] == "raw-deleted" and x["context_detection"] == "unavailable"
    assert "lat" not in x
    assert verify_tree(out).ok


def test_undecodable_frame_fails_closed_and_rerun_redoes_it(session_copy: tuple[Path, Path],
                                                             serial_publication: Path) -> None:
    session, out = session_copy
    raw = session / "frames" / "000003.jpg"
    good = raw.read_bytes()
    bad = b"\xff\xd8\xff\xe0" + b"\x00" * 500  # a JPEG header and nothing decodable
    raw.write_bytes(bad)

    def fix_hash(recs: list[dict[str, Any]]) -> None:
        recs[2]["sha256"] = hashlib.sha256(raw.read_bytes()).hexdigest()

    _rewrite_records(session, fix_hash)
    s = _run(session, out, _cfg())
    oc = s.sessions[0]
    assert (oc.published, oc.failed) == (JOB_FRAMES - 1, 1)
    assert oc.failures[0][0] == "000003" and oc.failures[0][1].startswith("decode:")
    assert not (out / session.name / "images" / "000003.jpg").exists()
    # Neighbours were rendered without the failed frame's boxes: they differ from the oracle.
    recs = audit.read_records(out / session.name / "audit.jsonl")
    failed = [r for r in recs if r.get("status") == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("decode:")

    raw.write_bytes(good)
    _rewrite_records(session, fix_hash)
    s = _run(session, out, _cfg())
    oc = s.sessions[0]
    assert (oc.published, oc.failed) == (JOB_FRAMES, 0)
    published = {p.name: p.read_bytes() for p in (out / session.name / "images").iterdir()}
    assert published == {p.name: p.read_bytes() for p in (serial_publication / "images").iterdir()}
    assert verify_tree(out).ok


def test_notice_follows_the_redaction_method(session_copy: tuple[Path, Path],
                                             caplog: pytest.LogCaptureFixture) -> None:
    session, out = session_copy
    cfg = _cfg()
    red = cfg.redact.model_copy(update={"redaction": cfg.redact.redaction.model_copy(update={"method": "pixelate"})})
    caplog.set_level("WARNING", logger="pipeline.job")
    _run(session, out, cfg.model_copy(update={"redact": red}))
    for name in ("notice.html", "notice.txt"):
        text = " ".join((out / session.name / name).read_text().split())
        assert "Faces and licence plates are pixelated before any use." in text and "are blurred before" not in text
    assert "says 'blur' in processing" in caplog.text  # configs/notice.toml's own paragraphs


def _corrupt(raw: Path) -> None:
    data = bytearray(raw.read_bytes())
    data[2000:2100] = bytes(100)
    raw.write_bytes(bytes(data))


def test_rerun_failure_keeps_the_earlier_publication(session_copy: tuple[Path, Path],
                                                     serial_publication: Path) -> None:
    """A frame published by an earlier run that fails in a later one (its raw frame went bad,
    and a new carry setting needs it rendered again) keeps its published image and feature,
    is audited as failed ("previous publication kept") and makes the run exit 1; a frame a zone
    now covers is still taken down even though it failed too."""

    from pipeline.cli.job_cmds import echo_summary
    from pipeline.errors import EXIT_ITEMS_FAILED, ItemsFailed

    session, out = session_copy
    _run(session, out, _cfg())
    sdir = out / session.name
    oracle = _images(serial_publication)
    assert _images(sdir) == oracle
    feats_before = {f["properties"]["frame_id"]: f for f in json.loads((sdir / "frames.geojson").read_bytes())["features"]}
    _corrupt(session / "frames" / "000004.jpg")
    _corrupt(session / "frames" / "000006.jpg")
    lon, lat = feats_before["000006"]["geometry"]["coordinates"]
    d = 2e-5
    zones = out.parent / "zones.geojson"
    zones.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
                                            [lon - d, lat + d], [lon - d, lat - d]]]}}))
    s = _run(session, out, _cfg(carry_expand=1.6, exclusion_zones=zones))
    oc = s.sessions[0]
    images = _images(sdir)
    assert images.get("000004.jpg") == oracle["000004.jpg"]  # the earlier image, byte for byte
    assert oc.failed == 1 and oc.kept_failed == 1 and oc.excluded == {"exclusion-zone": 1}
    assert oc.published == JOB_FRAMES - 1
    assert oc.failures[0][0] == "000004" and "previous publication kept" in oc.failures[0][1]
    assert "000006.jpg" not in images  # the zone removes it, failed or not
    assert images["000003.jpg"] != oracle["000003.jpg"]  # the others were re-rendered with the new carry
    feats = {f["properties"]["frame_id"]: f for f in json.loads((sdir / "frames.geojson").read_bytes())["features"]}
    assert feats["000004"] == feats_before["000004"] and "000006" not in feats
    recs = audit.read_records(sdir / "audit.jsonl")
    last = [r for r in recs if r.get("frame_id") == "000004"][-1]
    assert last["status"] == "failed" and last["note"] == "previous publication kept"
    assert "does not match the sha256" in last["error"] and last["output_sha256"] is None
    assert last["kept_output_sha256"] == hashlib.sha256(oracle["000004.jpg"]).hexdigest()
    assert recs[-1]["counts"]["kept_failed"] == 1 and recs[-1]["counts"]["failed"] == 1
    assert verify_tree(out).ok
    with pytest.raises(ItemsFailed, match="kept the image an earlier run published") as e:
        echo_summary(s)
    assert e.value.exit_code == EXIT_ITEMS_FAILED


def test_folder_of_sessions_and_usage_errors(job_session: Path, tmp_path: Path) -> None:
    from pipeline.job import expand_sessions

    assert expand_sessions([str(job_session.parent)]) == [str(job_session)]
    r = run_cli("run", str(tmp_path), "--out", str(tmp_path / "pub"))
    assert r.returncode == 2 and "not a session" in r.stderr
    r = run_cli("run", str(job_session), "--out", str(tmp_path / "pub"), "--scheduler", "tcp://127.0.0.1:9",
                "--workers", "2")
    assert r.returncode == 2 and "not with --scheduler" in r.stderr
    twin = tmp_path / "elsewhere" / job_session.name
    shutil.copytree(job_session, twin)
    r = run_cli("run", str(job_session), str(twin), "--out", str(tmp_path / "pub"), "--config", str(CONFIGS / "nightly.toml"))
    assert r.returncode == 2 and "would publish to the same folder" in r.stderr
    r = run_cli("purge", str(job_session.parent), "--raw-older-than", "soon", "--publish-dir", str(tmp_path))
    assert r.returncode == 2 and "--raw-older-than 'soon'" in r.stderr
