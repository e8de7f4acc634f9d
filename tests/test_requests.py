"""Residents' requests end to end on a real publication (the serial nightly path): extra blur
re-rendered from raw and spliced into the published image, takedown, exclusion zones, all in
the audit chains; the next nightly run keeps every outcome; forged edits still fail verify."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, run_cli
from PIL import Image

from pipeline import audit

NIGHTLY = str(CONFIGS / "nightly.toml")
MCU = 16  # the sample frames are 4:2:0 JPEGs (checked below)


@pytest.fixture
def tree(serial_publication: Path, job_session: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(publish dir, published session, raw session): private copies of the shared ones."""
    pub = tmp_path / "pub"
    shutil.copytree(serial_publication.parent, pub)
    raw = tmp_path / "sessions" / job_session.name
    shutil.copytree(job_session, raw)
    return pub, pub / job_session.name, raw


def _dct(path: Path) -> list[np.ndarray]:
    import jpeglib

    im = jpeglib.read_dct(str(path))
    return [im.Y, im.Cb, im.Cr]


def _blocks_outside(shape: tuple[int, ...], block_px: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Blocks (rows, cols) of a component whose pixels (block_px square) miss ``box``."""
    rows, cols = shape[:2]
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    x1, y1, x2, y2 = box
    hit = (c * block_px < x2) & ((c + 1) * block_px > x1) & (r * block_px < y2) & ((r + 1) * block_px > y1)
    return ~hit


def _aligned(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (x1 // MCU * MCU, y1 // MCU * MCU, math.ceil(x2 / MCU) * MCU, math.ceil(y2 / MCU) * MCU)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _pixels_no_fancy(path: Path) -> np.ndarray:
    import jpeglib

    return np.asarray(jpeglib.read_spatial(str(path), flags=["-DO_FANCY_UPSAMPLING"]).spatial).astype(np.int16)


def _detail(rgb: np.ndarray) -> float:
    g = rgb.mean(axis=2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def assert_changed_only_inside(old: Path, new: Path, box: tuple[int, int, int, int]) -> None:
    """The block-level promise, checked three ways: DCT blocks outside the box's MCUs are
    bit-identical; decoded without chroma interpolation, pixels outside them are identical;
    with Pillow's decoder (fancy upsampling), identical one pixel further out. Inside the box
    the image lost detail (it was blurred)."""
    a = _aligned(box)
    comps_old, comps_new = _dct(old), _dct(new)
    assert comps_old[0].shape[:2] == (45 * 2, 80 * 2) and comps_old[1].shape[:2] == (45, 80)  # 1280x720, 4:2:0
    for i, (co, cn) in enumerate(zip(comps_old, comps_new, strict=True)):
        out = _blocks_outside(co.shape, 8 if i == 0 else 16, a)
        assert np.array_equal(co[out], cn[out]), f"component {i}: DCT blocks outside {a} changed"
        assert not np.array_equal(co, cn) or i > 0
    po, pn = _pixels_no_fancy(old), _pixels_no_fancy(new)
    mask = np.zeros(po.shape[:2], bool)
    mask[a[1]:a[3], a[0]:a[2]] = True
    assert np.array_equal(po[~mask], pn[~mask])
    po, pn = _pixels(old), _pixels(new)
    mask[:] = False
    mask[max(0, a[1] - 1):a[3] + 1, max(0, a[0] - 1):a[2] + 1] = True
    assert np.array_equal(po[~mask], pn[~mask])
    x1, y1, x2, y2 = box
    assert _detail(pn[y1:y2, x1:x2]) < 0.5 * _detail(po[y1:y2, x1:x2])


def _chain(sdir: Path) -> list[dict]:  # type: ignore[type-arg]
    return audit.read_records(sdir / "audit.jsonl")


def _manifest_images(sdir: Path) -> dict[str, str]:
    man = json.loads((sdir / "manifest.json").read_bytes())
    return {k: v["sha256"] for k, v in man["files"].items() if k.startswith("images/")}


def _features(sdir: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    fc = json.loads((sdir / "frames.geojson").read_bytes())
    return {f["properties"]["frame_id"]: f for f in fc["features"]}


def _verify_ok(pub: Path) -> None:
    r = run_cli("audit", "verify", str(pub))
    assert r.returncode == 0, r.stdout + r.stderr


def _nightly_rerun(raw: Path, pub: Path) -> None:
    r = run_cli("redact", str(raw), "--out", str(pub), "--config", NIGHTLY, "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------- extra blur


def test_blur_from_raw_changes_only_the_box_and_survives_the_next_run(tree: tuple[Path, Path, Path]) -> None:
    pub, sdir, raw = tree
    fid, box = "000003", (400, 96, 592, 240)  # MCU-aligned: the box itself is the changed area
    img = sdir / "images" / f"{fid}.jpg"
    old_bytes = img.read_bytes()
    keep = pub.parent / "old.jpg"
    keep.write_bytes(old_bytes)
    r = run_cli("request", "add", str(sdir), "--frame", fid, "--blur", ",".join(map(str, box)),
                "--reason", "resident asked to blur the name plate of their house", "--requester-ref", "CASE-2026-17")
    assert r.returncode == 0, r.stderr
    assert img.read_bytes() == old_bytes  # queued only
    r = run_cli("request", "list", str(sdir))
    assert "pending" in r.stdout and "blur" in r.stdout and fid in r.stdout
    # The pending request is not in the published folder (its box still points at sharp pixels).
    assert b"CASE-2026-17" not in (sdir / "audit.jsonl").read_bytes()

    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "applied" in r.stdout
    assert_changed_only_inside(keep, img, box)

    new_sha = hashlib.sha256(img.read_bytes()).hexdigest()
    assert _manifest_images(sdir)[f"images/{fid}.jpg"] == new_sha
    assert _features(sdir)[fid]["properties"]["sha256"] == new_sha
    chain = _chain(sdir)
    req = [x for x in chain if x["type"] == "request"][-1]
    assert req["frame_id"] == fid and req["action"] == "blur"
    # Reason, reference and the boxes asked for stay in the queue (.governance/); the published
    # chain links to it by request id and the sha256 of the queued record.
    assert not {"reason", "requester_ref", "boxes"} & set(req)
    assert b"CASE-2026-17" not in (sdir / "audit.jsonl").read_bytes()
    queued = audit.read_records(pub / ".governance" / "requests.jsonl")[0]
    assert queued["requester_ref"] == "CASE-2026-17" and queued["boxes"] == [list(box)]
    assert req["queue_record_sha256"] == audit.line_hash(audit.canonical(queued))
    ov = [x for x in chain if x["type"] == "frame-override"][-1]
    assert ov["action"] == "blur" and ov["request_id"] == req["request_id"]  # applied boxes: later runs obey them
    frame = [x for x in chain if x["type"] == "frame" and x["frame_id"] == fid][-1]
    assert frame["status"] == "ok" and frame["output_sha256"] == new_sha
    assert frame["method"] == "request-rerender-raw"
    outcome = [x for x in chain if x["type"] == "request-outcome"][-1]
    assert outcome["status"] == "applied" and outcome["new_sha256"] == new_sha
    assert chain[-1]["type"] == "publish" and chain[-1]["requests"] == [req["request_id"]]
    queue = audit.read_records(pub / ".governance" / "requests.jsonl")
    assert [x["type"] for x in queue] == ["request", "request-outcome"]
    _verify_ok(pub)

    # The next nightly run obeys the override and renders the very same bytes (nothing churns).
    others = {k: v for k, v in _manifest_images(sdir).items() if k != f"images/{fid}.jpg"}
    _nightly_rerun(raw, pub)
    assert hashlib.sha256(img.read_bytes()).hexdigest() == new_sha
    assert {k: v for k, v in _manifest_images(sdir).items() if k != f"images/{fid}.jpg"} == others
    _verify_ok(pub)
    assert run_cli("request", "apply", str(sdir)).stdout.strip() == "no pending requests"


def test_blur_without_raw_edits_the_published_image_block_by_block(tree: tuple[Path, Path, Path]) -> None:
    from capture.session import SessionReader, delete_frames

    pub, sdir, raw = tree
    fid, box = "000005", (101, 203, 187, 290)  # not on the MCU grid: grows to (96, 192, 192, 304)
    reader = SessionReader(raw)
    delete_frames(raw, [r for r in reader.frames() if r.frame_id == fid], reason="retention")
    img = sdir / "images" / f"{fid}.jpg"
    keep = pub.parent / "old.jpg"
    keep.write_bytes(img.read_bytes())
    gps_before = Image.open(keep).getexif().get_ifd(0x8825)
    r = run_cli("request", "add", str(sdir), "--frame", fid, "--blur", ",".join(map(str, box)), "--reason",
                "leak report: a face was readable in the window")
    assert r.returncode == 0, r.stderr
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "raw frame was deleted" in r.stdout
    assert_changed_only_inside(keep, img, box)
    assert Image.open(img).getexif().get_ifd(0x8825) == gps_before  # EXIF geotag kept
    frame = [x for x in _chain(sdir) if x["type"] == "frame" and x["frame_id"] == fid][-1]
    assert frame["method"] == "request-splice-published"
    _verify_ok(pub)


def test_blur_without_any_raw_session(tree: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """No --sessions-root and the run's recorded source gone: the published image is edited."""
    pub, sdir, _ = tree
    empty = tmp_path / "no-sessions"
    empty.mkdir()
    r = run_cli("request", "add", str(sdir), "--frame", "000002", "--blur", "0,0,64,48", "--reason", "QA miss")
    assert r.returncode == 0, r.stderr
    keep = pub.parent / "old.jpg"
    keep.write_bytes((sdir / "images" / "000002.jpg").read_bytes())
    r = run_cli("request", "apply", str(pub), "--sessions-root", str(empty))
    assert r.returncode == 0, r.stdout + r.stderr
    assert_changed_only_inside(keep, sdir / "images" / "000002.jpg", (0, 0, 64, 48))
    _verify_ok(pub)
    # The QA sheet shows the edit: flagged, with the request box outlined where it was asked.
    r = run_cli("review", str(sdir), "--out", str(tmp_path / "review.html"))
    assert r.returncode == 0 and "1 edited by request" in r.stdout, r.stderr
    page = (tmp_path / "review.html").read_text()
    card = page[page.index('id="f-000002"'):].split("</article>")[0]
    assert "request" in card.split('data-flags="')[1].split('"')[0].split()
    assert '<rect class="box request request" x="0" y="0" width="64" height="48">' in card


# ---------------------------------------------------------------------------- a request during a nightly run


def test_requests_applied_while_the_job_renders_are_not_undone(tree: tuple[Path, Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The job plans and renders before it takes the session's publish lock; requests applied in
    between (blur, takedown, zone) must hold in what it publishes."""
    from capture.geodesy import offset_m
    from pipeline import job
    from pipeline.config import NightlyConfig, load_config
    from pipeline.requests import ApplyOptions, RequestSpec, add_request, apply_requests

    pub, sdir, raw = tree
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    blur_fid, gone_fid, zone_fid, box = "000003", "000006", "000004", (400, 96, 592, 240)
    lon, lat = _features(sdir)[zone_fid]["geometry"]["coordinates"]
    s, w = offset_m(lat, lon, -1.5, -1.5)
    n, e = offset_m(lat, lon, 1.5, 1.5)
    zone = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    before = _manifest_images(sdir)
    seen: dict[str, str] = {}
    publish = job._publish

    def requests_then_publish(*args, **kw):  # type: ignore[no-untyped-def]
        # Every frame is planned and rendered; the session lock is not taken yet.
        sid = sdir.name
        add_request(sdir, RequestSpec(action="blur", reason="late blur", session_id=sid, frame_id=blur_fid,
                                      boxes=(box,)))
        add_request(sdir, RequestSpec(action="remove", reason="late takedown", session_id=sid, frame_id=gone_fid))
        add_request(pub, RequestSpec(action="zone", reason="late zone", zone=zone))
        rep = apply_requests(pub, ApplyOptions(config=cfg, config_path=NIGHTLY, sessions_root=raw.parent))
        assert not rep.rejected, rep
        seen["blurred"] = _manifest_images(sdir)[f"images/{blur_fid}.jpg"]
        assert seen["blurred"] != before[f"images/{blur_fid}.jpg"]
        assert f"images/{gone_fid}.jpg" not in _manifest_images(sdir)
        return publish(*args, **kw)

    monkeypatch.setattr(job, "_publish", requests_then_publish)
    summary = job.run_serial(job.JobOptions(sessions=(str(raw),), out=str(pub), config=cfg, config_path=NIGHTLY,
                                            progress=False, threads=1))
    oc = summary.sessions[0]
    assert (oc.failed, oc.excluded) == (0, {"removed-by-request": 1, "exclusion-zone": 1})
    images = _manifest_images(sdir)
    assert images[f"images/{blur_fid}.jpg"] == seen["blurred"]  # re-rendered with the box, not the stale render
    assert f"images/{gone_fid}.jpg" not in images and gone_fid not in _features(sdir)
    assert f"images/{zone_fid}.jpg" not in images and zone_fid not in _features(sdir)
    assert {k: v for k, v in images.items() if blur_fid not in k} == \
        {k: v for k, v in before.items() if not any(f in k for f in (blur_fid, gone_fid, zone_fid))}
    chain = _chain(sdir)
    job_recs = chain[max(i for i, x in enumerate(chain) if x["type"] == "run"):]
    (blurred,) = [x for x in job_recs if x.get("frame_id") == blur_fid]
    assert blurred["status"] == "ok" and blurred["output_sha256"] == seen["blurred"]
    assert blurred["request_boxes"] == 1 and "re-rendered at publication" in blurred["note"]
    late = {x["frame_id"]: x for x in job_recs if x.get("status") == "excluded" and "note" in x}
    assert late[gone_fid]["reason"] == "removed-by-request" and late[zone_fid]["reason"] == "exclusion-zone"
    assert not any("lat" in x for x in late.values())
    zsha = hashlib.sha256((pub / ".governance" / "exclusion-zones.geojson").read_bytes()).hexdigest()
    assert job_recs[0]["request_zones_sha256"] == zsha  # the zones the publication obeyed
    _verify_ok(pub)
    # The next run has nothing left to change.
    monkeypatch.setattr(job, "_publish", publish)
    _nightly_rerun(raw, pub)
    assert _manifest_images(sdir) == images


def test_a_late_blur_that_cannot_be_rendered_fails_closed(tree: tuple[Path, Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """If the frame a request blurred during the run cannot be re-rendered under the lock, this
    run does not publish its render (never the stale, unblurred one): the image the request
    published stays, the frame is audited as failed; the next run completes it."""
    from pipeline import job
    from pipeline.config import NightlyConfig, load_config
    from pipeline.requests import ApplyOptions, RequestSpec, add_request, apply_requests

    pub, sdir, raw = tree
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    fid, box = "000003", (400, 96, 592, 240)
    raw_file = raw / "frames" / f"{fid}.jpg"
    good = raw_file.read_bytes()
    publish = job._publish
    seen: dict[str, str] = {}

    def blur_then_publish(*args, **kw):  # type: ignore[no-untyped-def]
        add_request(sdir, RequestSpec(action="blur", reason="late blur", session_id=sdir.name, frame_id=fid,
                                      boxes=(box,)))
        assert not apply_requests(pub, ApplyOptions(config=cfg, sessions_root=raw.parent)).rejected
        # The raw frame goes bad and the request's re-rendered result is gone from the work
        # cache (the job's own, stale render of the frame stays there).
        raw_file.write_bytes(good[:5000])
        blurred = seen["blurred"] = _manifest_images(sdir)[f"images/{fid}.jpg"]
        gone = [p for p in (pub / ".work" / sdir.name / "out").glob(f"{fid}-*.json")
                if json.loads(p.read_bytes())["sha256"] == blurred]
        assert len(gone) == 1
        gone[0].unlink()
        gone[0].with_suffix(".jpg").unlink()
        return publish(*args, **kw)

    monkeypatch.setattr(job, "_publish", blur_then_publish)
    summary = job.run_serial(job.JobOptions(sessions=(str(raw),), out=str(pub), config=cfg, progress=False,
                                            threads=1))
    oc = summary.sessions[0]
    assert oc.failed == 1 and oc.failures[0][0] == fid
    assert "a request changed this frame while the run was rendering it" in oc.failures[0][1]
    assert "verify:" in oc.failures[0][1] and "previous publication kept" in oc.failures[0][1]
    assert _manifest_images(sdir)[f"images/{fid}.jpg"] == seen["blurred"]  # the request's, not the stale render
    last = [x for x in _chain(sdir) if x.get("frame_id") == fid][-1]
    assert last["status"] == "failed" and "the next run retries" in last["error"]
    assert last["note"] == "previous publication kept" and last["kept_output_sha256"] == seen["blurred"]
    _verify_ok(pub)
    monkeypatch.setattr(job, "_publish", publish)
    raw_file.write_bytes(good)
    _nightly_rerun(raw, pub)  # completes it, with the request's blur
    blurred = [x for x in _chain(sdir) if x["type"] == "request-outcome" and x.get("new_sha256")][-1]["new_sha256"]
    assert _manifest_images(sdir)[f"images/{fid}.jpg"] == blurred


def test_request_edits_use_the_runs_redaction_params_including_the_face_shape() -> None:
    """A request's blur and the QA sheet redraw with the parameters the run recorded."""
    from pipeline.requests import _params_of
    from redact.config import RedactConfig
    from redact.engine import Redactor

    cfg = RedactConfig.model_validate({"redaction": {"face_shape": "rectangle", "face_expand": 1.4}})
    info = Redactor(cfg, threads=1).info
    params = _params_of({"detectors": info})
    assert params.face_shape == "rectangle" and params.face_expand == 1.4
    assert _params_of(None).face_shape == "ellipse"
