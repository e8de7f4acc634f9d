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
    assert req["requester_ref"] == "CASE-2026-17" and req["boxes"] == [list(box)] and req["frame_id"] == fid
    ov = [x for x in chain if x["type"] == "frame-override"][-1]
    assert ov["action"] == "blur" and ov["request_id"] == req["request_id"]
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
