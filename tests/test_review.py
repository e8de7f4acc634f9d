"""The QA review sheet: the rules (tables), and the page in a real headless Chromium built from
a real publication with a frame the detector finds nothing in and a frame that failed."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, ROOT, run_cli
from PIL import Image

from pipeline.config import NightlyConfig, load_config
from pipeline.review import ReviewOptions, busy_empty, low_confidence

FRAMES = 6
BLANK = 3  # index of the frame with nothing in it
CORRUPT = 5  # index of the frame whose raw file is damaged after capture


# ---------------------------------------------------------------------------- rules


@pytest.mark.parametrize(("scores", "classes", "expected"), [
    ([0.9, 0.8], [0, 1], ()),
    ([0.36], [0], ("face",)),  # face threshold 0.35 + margin 0.15: [0.35, 0.50) is low
    ([0.50], [0], ()),
    ([0.44], [1], ("plate",)),  # plate threshold 0.30: [0.30, 0.45)
    ([0.45], [1], ()),
    ([0.44, 0.9, 0.36, 0.40], [1, 0, 0, 0], ("face", "plate")),  # each class once, in class order
    ([], [], ()),
])
def test_low_confidence(scores: list[float], classes: list[int], expected: tuple[str, ...]) -> None:
    assert low_confidence(scores, classes, {"face": 0.35, "plate": 0.3}, 0.15) == expected


@pytest.mark.parametrize(("own", "expected"), [
    ([3, 2, 0, 1, 4], [False, False, True, False, False]),
    ([0, 0, 0, 0], [False] * 4),  # an empty street is not busy
    ([5, 0, 0, 0, 5], [False, False, True, False, False]),  # the outer zeros have one busy neighbour
    ([5, 5, 0, 0, 5, 5], [False, False, True, True, False, False]),
    ([None, 1, 0, None, None], [False] * 5),  # unknown counts never make an area busy
    ([1, None, 0, None, 1], [False, False, True, False, False]),
    ([2, 2, 0], [False, False, True]),
])
def test_busy_empty(own: list[int | None], expected: list[bool]) -> None:
    assert busy_empty(own, 2, 2) == expected


# ---------------------------------------------------------------------------- a real publication


def _make_session(root: Path) -> Path:
    import cv2

    from capture.geodesy import offset_m
    from capture.session import SessionMeta, SessionWriter
    from pipeline.sample import ORIGIN, START, draw_frame

    meta = SessionMeta(vehicle_id="qa-01", operator="Example Road Survey Co., Ltd.", purpose="QA test",
                       notice_version="2026-11-01", camera_model="synthetic", width=1280, height=720, source="sample")
    w = SessionWriter.create(root, meta, start=START)
    for i in range(FRAMES):
        if i == BLANK:  # sky over an empty road: nothing to detect
            rgb = np.zeros((720, 1280, 3), np.uint8)
            rgb[:324], rgb[324:] = (150, 200, 235), (150, 146, 140)
        else:
            rgb, _ = draw_frame(i)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        lat, lon = offset_m(ORIGIN[0], ORIGIN[1], -6.0 * i, -2.0 * i)
        w.add_frame(buf.tobytes(), time=START + timedelta(seconds=i), position_source="fix", lat=lat, lon=lon,
                    altitude=5.0, heading=200.0, speed=6.0, fix_quality=1, hdop=0.9, satellites=10,
                    width=1280, height=720)
    path = w.close(end=START + timedelta(seconds=FRAMES))
    raw = sorted((path / "frames").iterdir())[CORRUPT]
    data = bytearray(raw.read_bytes())
    data[4000:4100] = bytes(100)
    raw.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(published session, where the raw session went, raw frames decoded) — the raw session is
    moved away before the sheet is made, so the sheet cannot have read it."""
    base = tmp_path_factory.mktemp("review")
    sess = _make_session(base / "sessions")
    r = run_cli("redact", str(sess), "--out", str(base / "pub"), "--config", str(CONFIGS / "nightly.toml"),
                "--threads", "1")
    assert r.returncode == 1, r.stdout + r.stderr  # the corrupt frame failed (fail closed)
    raw = {p.name.split(".")[0]: np.asarray(Image.open(p).convert("RGB")) for p in sorted((sess / "frames").iterdir())}
    gone = base / "moved-away"
    shutil.move(str(sess), gone)
    return base / "pub" / sess.name, gone, raw


@pytest.fixture(scope="module")
def sheet(published: tuple[Path, Path, dict[str, np.ndarray]]) -> tuple[Path, str]:
    sdir = published[0]
    out = sdir.parent.parent / "review.html"
    r = run_cli("review", str(sdir), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian chromium is needed for the QA sheet test (scripts/test.sh installs it)")
    return exe


def _browser(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="streetveil-chromium-") as profile:
        return subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=120)


class _Dom(HTMLParser):
    """The parts of the DOM Chromium dumped that the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.cards: list[dict[str, str | None]] = []
        self.rects: dict[str, list[dict[str, str | None]]] = {}
        self.imgs: list[str] = []
        self.errors = ""
        self.failed_rows: list[str] = []
        self._in_errors = False
        self._card: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "body":
            self.body = a
        elif tag == "article" and "frame-card" in cls:
            self.cards.append(a)
            self._card = a.get("data-frame")
        elif tag == "rect" and "box" in cls.split() and self._card:
            self.rects.setdefault(self._card, []).append(a)
        elif tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "pre" and a.get("id") == "js-errors":
            self._in_errors = True
        elif tag == "tr" and "failed-row" in cls:
            self.failed_rows.append(a.get("data-frame") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_errors = False
        if tag == "article":
            self._card = None

    def handle_data(self, data: str) -> None:
        if self._in_errors:
            self.errors += data


def _dom(page: Path, fragment: str = "") -> _Dom:
    r = _browser(page.as_uri() + fragment, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    d = _Dom()
    d.feed(r.stdout)
    assert d.body.get("data-ready") == "1", "the page's script did not finish: " + r.stdout[-2000:]
    assert d.errors.strip() == "", f"JavaScript errors: {d.errors}"
    return d


def _visible(d: _Dom) -> set[str]:
    return {str(c["data-frame"]) for c in d.cards if "hidden" not in c}


def _dets(sdir: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    """The job's detections per published frame, read here independently of the sheet."""
    from pipeline import audit
    from pipeline.tasks import detect_key

    recs = audit.read_records(sdir / "audit.jsonl")
    run = next(r for r in recs if r["type"] == "run")
    out = {}
    for r in recs:
        if r["type"] == "frame" and r["status"] == "ok":
            key = detect_key(r["raw_sha256"], run["redact_config_key"], run["model_hash"])
            f = sdir.parent / ".work" / sdir.name / "det" / f"{r['frame_id']}-{key[:16]}.json"
            out[r["frame_id"]] = json.loads(f.read_bytes())
    return out


@pytest.mark.needs_chromium
def test_sheet_in_a_real_browser(published: tuple[Path, Path, dict[str, np.ndarray]], sheet: tuple[Path, str],
                                 tmp_path: Path) -> None:
    sdir, _, _ = published
    page, stdout = sheet
    feats = json.loads((sdir / "frames.geojson").read_bytes())["features"]
    ids = sorted(f["properties"]["frame_id"] for f in feats)
    assert len(ids) == FRAMES - 1
    d = _dom(page)
    assert sorted(str(c["data-frame"]) for c in d.cards) == ids  # one card per published image
    assert d.body.get("data-visible") == str(FRAMES - 1)
    assert f"{FRAMES - 1} published, 1 failed" in stdout

    # Filters, applied by the page's own script from the URL, against expectations computed here.
    dets = _dets(sdir)
    blank = f"{BLANK + 1:06d}"
    assert len(dets[blank]["score"]) == 0 and all(len(dets[f]["score"]) > 0 for f in ids if f != blank)
    assert _visible(_dom(page, "#filter=busy")) == {blank}
    det_cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={}).redact.detector
    from redact.detectors import plate_threshold

    thr = {0: det_cfg.face_threshold, 1: plate_threshold(det_cfg)}
    low = {c: {f for f, x in dets.items()
               if any(thr[k] <= s < thr[k] + 0.15 for s, k in zip(x["score"], x["cls"], strict=True) if k == c)}
           for c in (0, 1)}
    assert _visible(_dom(page, "#filter=lowconf")) == low[0] | low[1]
    # Per class as well (the sample's faces and plates flag different frames, else this shows nothing).
    assert _visible(_dom(page, "#filter=lowconf-face")) == low[0]
    assert _visible(_dom(page, "#filter=lowconf-plate")) == low[1]
    assert low[0] != low[1]
    assert f"({len(low[0])} with a face, {len(low[1])} with a plate)" in stdout
    failed = _dom(page, "#filter=failed")
    assert failed.failed_rows == [f"{CORRUPT + 1:06d}"] and failed.body.get("data-visible") == "1"
    assert "does not match the sha256" in page.read_text()

    # Redaction areas: every detection of a frame is outlined (own boxes; carried ones on top).
    for fid in ids:
        own = [r for r in d.rects.get(fid, []) if "detected" in str(r.get("class"))]
        assert len(own) == len(dets[fid]["score"])

    # Screenshot artefact (look at it: artifacts/review-sheet.png).
    shot = tmp_path / "review-sheet.png"
    r = _browser(page.as_uri(), f"--screenshot={shot}", "--window-size=1400,1000")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert Image.open(shot).size == (1400, 1000)
    art = ROOT / "artifacts"
    art.mkdir(exist_ok=True)
    shutil.copyfile(shot, art / "review-sheet.png")
    print(f"QA sheet screenshot: {shot} (copied to {art / 'review-sheet.png'}); page: {page}")


def test_each_class_can_have_its_own_low_confidence_margin(published: tuple[Path, Path, dict[str, np.ndarray]],
                                                           tmp_path: Path) -> None:
    sdir, _, _ = published
    dets = _dets(sdir)
    det_cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={}).redact.detector
    from redact.detectors import plate_threshold

    thr = {0: det_cfg.face_threshold, 1: plate_threshold(det_cfg)}
    margin = {0: 0.6, 1: 0.01}  # faces: wider than the default 0.15; plates: narrower

    def flagged(c: int, m: float) -> set[str]:
        return {f for f, x in dets.items()
                if any(thr[c] <= s < thr[c] + m for s, k in zip(x["score"], x["cls"], strict=True) if k == c)}

    want = {c: flagged(c, margin[c]) for c in (0, 1)}
    # Else the options would change nothing on this sample and the test could not fail.
    assert want[0] != flagged(0, 0.15) or want[1] != flagged(1, 0.15)
    out = tmp_path / "r.html"
    r = run_cli("review", str(sdir), "--out", str(out), "--low-margin-face", "0.6", "--low-margin-plate", "0.01")
    assert r.returncode == 0, r.stderr
    assert f"({len(want[0])} with a face, {len(want[1])} with a plate)" in r.stdout
    d = _Dom()
    d.feed(out.read_text())
    cards = {str(c["data-frame"]): str(c.get("data-flags")).split() for c in d.cards}
    assert {f for f, fl in cards.items() if "lowconf-face" in fl} == want[0]
    assert {f for f, fl in cards.items() if "lowconf-plate" in fl} == want[1]
    page = out.read_text()
    assert "less than 0.6 above the face threshold" in page and "less than 0.01 above the plate threshold" in page
    assert "less than 0.6 (face) / 0.01 (plate) above its class threshold" in page
    # Both classes given the same margin, other than --low-margin: the union filter says that one.
    r = run_cli("review", str(sdir), "--out", str(out), "--low-margin-face", "0.05", "--low-margin-plate", "0.05")
    assert r.returncode == 0, r.stderr
    assert "less than 0.05 above its class threshold" in out.read_text()
    assert low_confidence([0.36, 0.31], [0, 1], {"face": 0.35, "plate": 0.3}, {"face": 0.15, "plate": 0.005}) \
        == ("face",)
    with pytest.raises(ValueError, match="low_margin_plate"):
        ReviewOptions(low_margin_plate=1.5)


def _down(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS)).astype(np.int16)


def test_sheet_holds_only_published_pixels(published: tuple[Path, Path, dict[str, np.ndarray]],
                                           sheet: tuple[Path, str]) -> None:
    """Each embedded thumbnail is a downscale of the published image (not of the raw frame):
    inside the redaction areas it matches the published pixels and not the raw ones. The raw
    session was moved away before the sheet was made, so it could not have been read; and the
    page can load nothing from outside (CSP, data: images only)."""
    sdir, gone, raw = published
    page, _ = sheet
    html = page.read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", html)
    d = _Dom()
    d.feed(html)
    assert len(d.imgs) == FRAMES - 1 and all(s.startswith("data:image/jpeg;base64,") for s in d.imgs)
    assert gone.is_dir() and not any(str(gone) in line for line in html.splitlines() if "<img" in line)
    checked = 0
    for card, src in zip(d.cards, d.imgs, strict=True):
        fid = str(card["data-frame"])
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
        th, tw = thumb.shape[:2]
        pub = np.asarray(Image.open(sdir / "images" / f"{fid}.jpg").convert("RGB"))
        sx = tw / pub.shape[1]
        down_pub = _down(pub, tw, th)
        down_raw = _down(raw[fid], tw, th)
        t = thumb.astype(np.int16)
        # Same picture (JPEG q80 thumbnails of synthetic street scenes differ by a few levels).
        assert np.abs(t - down_pub).mean() < 5.0
        mask = np.zeros((th, tw), bool)
        for rect in d.rects.get(fid, []):
            if "detected" not in str(rect.get("class")) or "face" not in str(rect.get("class")):
                continue
            x, y, w, h = (float(rect[k] or 0) * sx for k in ("x", "y", "width", "height"))
            if w * h / sx / sx < 40 * 40:
                continue  # faces too small for a difference to survive the 1/4 downscale
            mask[int(y + h * 0.25):int(y + h * 0.75), int(x + w * 0.25):int(x + w * 0.75)] = True
        if mask.sum() < 20:
            continue
        to_pub = np.abs(t - down_pub)[mask].mean()
        to_raw = np.abs(t - down_raw)[mask].mean()
        # Measured here: about 4 levels from the published image, about 35 from the raw frame.
        assert to_pub < 8.0 and to_raw > 3 * to_pub, (fid, to_pub, to_raw)
        checked += 1
    assert checked >= 2  # the sample frames have large faces


def _sheet_rects(sdir: Path, out: Path) -> tuple[dict[str, list[dict[str, str | None]]], str]:
    r = run_cli("review", str(sdir), "--out", str(out))
    assert r.returncode == 0, r.stderr
    d = _Dom()
    d.feed(out.read_text())
    assert len(d.cards) == FRAMES - 1
    return d.rects, r.stdout


def test_sheet_keeps_its_boxes_without_the_work_cache(published: tuple[Path, Path, dict[str, np.ndarray]],
                                                      tmp_path: Path) -> None:
    """The boxes come from the publication's QA detections (PUBLISH_DIR/.qa), so deleting the
    job's work cache loses nothing; they equal what the work cache gives (carry recomputed)."""
    sdir, _, _ = published
    full, _ = _sheet_rects(sdir, tmp_path / "full.html")
    assert sum(len(v) for v in full.values()) > 0
    no_work = tmp_path / "no-work"
    shutil.copytree(sdir.parent, no_work, ignore=shutil.ignore_patterns(".work"))
    rects, stdout = _sheet_rects(no_work / sdir.name, tmp_path / "no-work.html")
    assert rects == full and "0 without detection data" in stdout
    only_work = tmp_path / "only-work"
    shutil.copytree(sdir.parent, only_work, ignore=shutil.ignore_patterns(".qa"))
    rects, _ = _sheet_rects(only_work / sdir.name, tmp_path / "only-work.html")
    assert rects == full  # the fallback for publications from before .qa existed


def test_sheet_says_when_detections_are_gone(published: tuple[Path, Path, dict[str, np.ndarray]],
                                             tmp_path: Path) -> None:
    """Without QA detections and work cache the images and counts are still shown, flagged."""
    sdir, _, _ = published
    pub = tmp_path / "pub"
    shutil.copytree(sdir.parent, pub, ignore=shutil.ignore_patterns(".work", ".qa"))
    r = run_cli("review", str(pub / sdir.name), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    assert f"{FRAMES - 1} without detection data" in r.stdout
    d = _Dom()
    d.feed((tmp_path / "r.html").read_text())
    assert len(d.cards) == FRAMES - 1 and all("nodata" in str(c["data-flags"]) for c in d.cards)
    assert not d.rects  # no boxes to outline


def test_qa_detections_file(published: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """Durable, outside the published folder, published frames only, boxes/classes/scores only,
    and covered by the audit chain (a changed or missing file fails verify)."""
    import hashlib

    from pipeline import audit

    sdir, _, _ = published
    recs = audit.read_records(sdir / "audit.jsonl")
    ref = [r for r in recs if r["type"] == "publish"][-1]["qa_detections"]
    qa = sdir.parent / ref["file"]
    assert qa.parent == sdir.parent / ".qa" / sdir.name and qa.is_file()
    assert sorted(x.name for x in qa.parent.iterdir()) == [qa.name]
    data = qa.read_bytes()
    assert ref["sha256"] == hashlib.sha256(data).hexdigest() and qa.name == f"detections-{ref['sha256'][:16]}.jsonl"
    assert not any(".qa" in f or "detections" in f for f in json.loads((sdir / "manifest.json").read_bytes())["files"])
    entries = [json.loads(x) for x in data.splitlines()]
    feats = {f["properties"]["frame_id"]: f["properties"] for f in
             json.loads((sdir / "frames.geojson").read_bytes())["features"]}
    assert [e["frame_id"] for e in entries] == sorted(feats) and ref["frames"] == FRAMES - 1  # not the failed one
    dets = _dets(sdir)
    for e in entries:
        assert set(e) == {"v", "frame_id", "image_sha256", "width", "height", "detect_key", "detections"}
        assert dets[e["frame_id"]]["vetoed"] is None  # no verifier in this setup: no vetoes recorded
        assert e["image_sha256"] == feats[e["frame_id"]]["sha256"] and (e["width"], e["height"]) == (1280, 720)
        own = [d for d in e["detections"] if not d["carried"]]
        want = dets[e["frame_id"]]
        assert [d["box"] for d in own] == want["xyxy"] and [d["score"] for d in own] == want["score"]
        assert [("face", "plate").index(d["class"]) for d in own] == want["cls"]
        assert all(set(d) == {"class", "box", "score", "carried"} for d in e["detections"])
        carried = [d for d in e["detections"] if d["carried"]]
        faces_c = sum(d["class"] == "face" for d in carried)
        rec = [r for r in recs if r.get("frame_id") == e["frame_id"] and r.get("status") == "ok"][-1]
        assert (faces_c, len(carried) - faces_c) == (rec["faces_carried"], rec["plates_carried"])
    r = run_cli("audit", "verify", str(sdir.parent))
    assert r.returncode == 0, r.stderr
    for tamper, expect in (("edit", "sha256 differs from the last publish record"), ("delete", "missing")):
        pub = tmp_path / tamper
        shutil.copytree(sdir.parent, pub, ignore=shutil.ignore_patterns(".work"))
        f = pub / ref["file"]
        if tamper == "edit":
            f.write_bytes(f.read_bytes().replace(b'"score":0.', b'"score":0.0', 1))
        else:
            f.unlink()
        r = run_cli("audit", "verify", str(pub / sdir.name))
        assert r.returncode == 1 and f"FIRST PROBLEM: {ref['file']}: {expect}" in r.stderr, r.stderr


def test_map_across_the_antimeridian_stays_together() -> None:
    """Frames 20 m apart on either side of ±180 are drawn next to each other, not at the two
    ends of a map stretched round the globe."""
    import itertools
    import re

    from pipeline.review import FrameView, ReviewOptions, SessionReview, _map_svg

    frames = [FrameView(f"00000{i}", f"t{i}", -16.5, lon, "published") for i, lon in
              enumerate((179.9997, 179.9999, -179.9999, -179.9997), start=1)]
    track = [[(-16.5, 179.9996), (-16.5, 180.0)], [(-16.5, -180.0), (-16.5, -179.9996)]]
    rv = SessionReview("S", frames, {}, {}, track, {}, ReviewOptions())
    svg = _map_svg(rv, width=400, height=300)
    xs = [float(x) for x in re.findall(r'<circle[^>]* cx="([-0-9.]+)"', svg)]
    assert len(xs) == 4 and xs == sorted(xs)  # west to east, in order
    steps = [b - a for a, b in itertools.pairwise(xs)]
    assert max(steps) < 2 * min(steps)  # evenly spaced: the crossing is no wider than a step


def test_review_refuses_a_folder_that_is_not_a_published_session(tmp_path: Path) -> None:
    r = run_cli("review", str(tmp_path))
    assert r.returncode == 2 and "not a published session" in r.stderr


@pytest.mark.needs_chromium
def test_sheet_shows_the_plates_a_verifier_vetoed(tmp_path: Path) -> None:
    """With ``plate_verify = "on"`` the candidates the verifier vetoed that the detector alone
    would have blurred are kept in the QA detections, left unblurred, and outlined on the sheet
    with a filter of their own, so a reviewer can judge the verifier on their camera (on these
    demo frames: plate boxes the detector alone puts on pedestrians, and one real plate of the
    sample, the verifier's known weakness on another renderer's plates, MODEL_CARD.md).
    Without a verifier no vetoes are recorded and the sheet does not mention them."""
    from pipeline.sample import make_sample_session
    from redact.boxes import iou_matrix

    sess = make_sample_session(tmp_path / "sessions", frames=6)
    pub = tmp_path / "pub"
    r = run_cli("redact", str(sess), "--out", str(pub), "--config", str(CONFIGS / "nightly.toml"), "--threads", "1",
                env={"STREETVEIL_NIGHTLY__REDACT__DETECTOR__PLATE_VERIFY": "on"})
    assert r.returncode == 0, r.stdout + r.stderr
    sdir = pub / sess.name
    (qa,) = (sdir.parent / ".qa" / sess.name).glob("detections-*.jsonl")
    entries = [json.loads(line) for line in qa.read_text().splitlines()]
    assert len(entries) == 6 and all(isinstance(e.get("vetoed"), list) for e in entries)
    flagged = {e["frame_id"] for e in entries if e["vetoed"]}
    total = sum(len(e["vetoed"]) for e in entries)
    assert flagged and total >= len(flagged)
    assert f"plate verifier: {total} candidate(s)" in r.stdout  # the operator sees it at once
    frames = [x for x in map(json.loads, (sdir / "audit.jsonl").read_text().splitlines())
              if x.get("type") == "frame" and x.get("status") == "ok"]
    assert sum(x["plates_vetoed"] for x in frames) == total  # and the audit chain counts it
    for e in entries:
        if not e["vetoed"]:
            continue
        assert {v["class"] for v in e["vetoed"]} == {"plate"}
        blurred = np.array([d["box"] for d in e["detections"]], np.float32).reshape(-1, 4)
        if len(blurred):  # vetoed means not among the redacted boxes
            assert iou_matrix(np.array([v["box"] for v in e["vetoed"]], np.float32), blurred).max() < 0.9
    out = tmp_path / "review.html"
    r = run_cli("review", str(sdir), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"{len(flagged)} with a plate the verifier vetoed" in r.stdout
    page = out.read_text()
    assert all(f'id="f-{fid}"' in page for fid in flagged) and page.count("· vetoed ") == 6
    d = _Dom()
    d.feed(page)
    rects = [a for rs in d.rects.values() for a in rs if "vetoed" in str(a.get("class")).split()]
    assert len(rects) == total
    assert {str(c["data-frame"]) for c in d.cards if "vetoed" in str(c["data-flags"]).split()} == flagged
    assert _visible(_dom(out, "#filter=vetoed")) == flagged

    plain = tmp_path / "plain"
    r = run_cli("redact", str(sess), "--out", str(plain), "--config", str(CONFIGS / "nightly.toml"), "--threads", "1")
    assert r.returncode == 0 and "plate verifier" not in r.stdout, r.stdout + r.stderr
    assert "plates_vetoed" not in (plain / sess.name / "audit.jsonl").read_text()
    (qa,) = (plain / ".qa" / sess.name).glob("detections-*.jsonl")
    assert all("vetoed" not in json.loads(line) for line in qa.read_text().splitlines())
    r = run_cli("review", str(plain / sess.name), "--out", str(tmp_path / "plain.html"))
    assert r.returncode == 0 and "0 with a plate the verifier vetoed" in r.stdout, r.stderr
    assert "vetoed" not in (tmp_path / "plain.html").read_text().split("<main>")[1].split("</main>")[0]
