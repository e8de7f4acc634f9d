"""Unblur requests: a plate box the detector put on a street sign is left out of the frame's
image by re-rendering it from raw, recorded in the chains, kept by later nightly runs, shown
on the QA sheet; and everything an unblur must not do is refused (see test_requests.py for
extra blur)."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path
from typing import Any

import jpeglib
import numpy as np
import pytest
from conftest import CONFIGS, run_cli
from PIL import Image
from test_requests import NIGHTLY, _chain, _manifest_images, _nightly_rerun, _verify_ok, tree

from pipeline import audit, qadata
from pipeline.requests import _params_of, basis_run
from redact.ops import redaction_boxes
from redact.types import FACE, PLATE

__all__ = ["tree"]  # the fixture, shared with test_requests.py

FID = "000004"  # the sample's 4th frame: the detector alone blurs part of its road sign
MCU = 16


def _qa_entry(sdir: Path, fid: str) -> dict[str, Any]:
    ref = qadata.named(_chain(sdir))
    assert ref is not None
    entries, why = qadata.read(lambda rel: (sdir.parent / rel).read_bytes(), ref)
    assert entries is not None, why
    return entries[fid]


def _areas(entry: dict[str, Any], sdir: Path, cls: int, *, unblurred: bool = False) -> list[tuple[int, int, int, int]]:
    """The redaction areas of the frame's boxes of ``cls`` (blurred ones, or those an unblur
    left out), rounded out to whole pixels."""
    params = _params_of(basis_run(_chain(sdir)))
    ds = [d for d in entry["detections"] if qadata.CLASS_NAMES.index(d["class"]) == cls
          and bool(d.get("unblurred")) == unblurred]
    xy = np.array([d["box"] for d in ds], np.float32).reshape(-1, 4)
    r = redaction_boxes(xy, np.full(len(ds), cls, np.uint8), params, entry["width"], entry["height"])
    return [(math.floor(a), math.floor(b), math.ceil(c), math.ceil(d)) for a, b, c, d in r.tolist()]


def _inside(area: tuple[int, ...], box: tuple[int, ...]) -> bool:
    return area[0] <= box[0] and area[1] <= box[1] and box[2] <= area[2] and box[3] <= area[3]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _sign_and_area(sdir: Path, fid: str = FID) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], int]:
    """(the road sign the generator drew in ``fid``, the area an operator draws around the
    plate redactions on it, how many there are)."""
    from pipeline.sample import draw_frame

    sign = draw_frame(int(fid) - 1)[1].signs[0]
    entry = _qa_entry(sdir, fid)
    on_sign = []
    for a in _areas(entry, sdir, PLATE):
        ix = max(0, min(a[2], sign[2]) - max(a[0], sign[0])) * max(0, min(a[3], sign[3]) - max(a[1], sign[1]))
        if ix > 0.5 * (a[2] - a[0]) * (a[3] - a[1]):
            on_sign.append(a)
    assert on_sign, "precondition: the default detector blurs part of the sample's road sign"
    area = (min(a[0] for a in on_sign), min(a[1] for a in on_sign), max(a[2] for a in on_sign),
            max(a[3] for a in on_sign))
    assert not any(_inside(area, f) for f in _areas(entry, sdir, FACE))
    return sign, area, sum(_inside(area, a) for a in _areas(entry, sdir, PLATE))


def _freed(entry: dict[str, Any], sdir: Path, sign: tuple[int, int, int, int]) -> np.ndarray:
    """Mask of the sign's pixels that only the left-out plate boxes redacted: what the unblur
    promises to show (other redactions may overlap the sign and stay)."""
    h, w = entry["height"], entry["width"]
    mask = np.zeros((h, w), bool)
    for a in _areas(entry, sdir, PLATE, unblurred=True):
        mask[a[1]:a[3], a[0]:a[2]] = True
    for cls in (FACE, PLATE):
        for a in _areas(entry, sdir, cls):
            mask[a[1]:a[3], a[0]:a[2]] = False
    x1, y1, x2, y2 = sign
    keep = np.zeros_like(mask)
    keep[y1:y2, x1:x2] = True
    assert (mask & keep).sum() > 2000, "precondition: the left-out boxes cover much of the sign"
    return mask & keep


def _dct_outside_unchanged(old: Path, new: Path, area: tuple[int, int, int, int]) -> None:
    """Every DCT block outside the area's MCUs is bit-identical (the re-render touched nothing
    else: no other redaction of this frame read the pixels of the box left out)."""
    a = (area[0] // MCU * MCU, area[1] // MCU * MCU, math.ceil(area[2] / MCU) * MCU, math.ceil(area[3] / MCU) * MCU)
    jo, jn = jpeglib.read_dct(str(old)), jpeglib.read_dct(str(new))
    for i, (co, cn) in enumerate(zip((jo.Y, jo.Cb, jo.Cr), (jn.Y, jn.Cb, jn.Cr), strict=True)):
        px = 8 if i == 0 else 16
        r = np.arange(co.shape[0])[:, None]
        c = np.arange(co.shape[1])[None, :]
        hit = (c * px < a[2]) & ((c + 1) * px > a[0]) & (r * px < a[3]) & ((r + 1) * px > a[1])
        assert np.array_equal(co[~hit], cn[~hit]), f"component {i} changed outside {a}"
        assert i > 0 or not np.array_equal(co, cn)


def test_unblur_makes_a_sign_legible_again_and_holds_in_later_runs(tree: tuple[Path, Path, Path],
                                                                  tmp_path: Path) -> None:
    pub, sdir, raw = tree
    sign, area, n = _sign_and_area(sdir)
    img = sdir / "images" / f"{FID}.jpg"
    old = tmp_path / "old.jpg"
    shutil.copyfile(img, old)
    raw_rgb = _rgb(raw / "frames" / f"{FID}.jpg")
    freed: np.ndarray | None = None

    def off_raw(p: Path) -> float:  # how far the freed pixels of the sign are from the raw frame's
        return float(np.abs(_rgb(p)[freed] - raw_rgb[freed]).mean())

    r = run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", ",".join(map(str, area)),
                "--reason", "QA: road sign blurred as a plate; the GIS team needs it", "--requester-ref", "QA-2026-3")
    assert r.returncode == 0 and "queued unblur" in r.stdout, r.stderr
    assert img.read_bytes() == old.read_bytes()  # queued only
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0 and "applied" in r.stdout and f"without {n} plate redaction(s)" in r.stdout, \
        r.stdout + r.stderr
    freed = _freed(_qa_entry(sdir, FID), sdir, sign)
    assert off_raw(old) > 8  # was blurred: the lettering could not be read
    assert off_raw(img) < 4  # now as sharp as the raw frame, up to JPEG
    _dct_outside_unchanged(old, img, area)

    new_sha = hashlib.sha256(img.read_bytes()).hexdigest()
    assert _manifest_images(sdir)[f"images/{FID}.jpg"] == new_sha
    before = next(x for x in _chain(sdir) if x["type"] == "frame" and x["frame_id"] == FID)
    chain = _chain(sdir)
    ov = [x for x in chain if x["type"] == "frame-override"][-1]
    assert ov["action"] == "unblur" and ov["areas"] == [list(area)] and ov["frame_id"] == FID
    frame = [x for x in chain if x["type"] == "frame" and x["frame_id"] == FID][-1]
    assert frame["output_sha256"] == new_sha and frame["plates_unblurred"] == n
    assert frame["plates"] == before["plates"] - n and frame["faces"] == before["faces"]
    req = [x for x in chain if x["type"] == "request"][-1]
    assert req["action"] == "unblur" and "reason" not in req and b"QA-2026-3" not in (sdir / "audit.jsonl").read_bytes()
    # The QA detections describe the new image: no blurred plate box inside the area any more;
    # the boxes left out are still listed (marked), in the detector's order.
    entry = _qa_entry(sdir, FID)
    assert entry["image_sha256"] == new_sha
    assert not any(_inside(area, a) for a in _areas(entry, sdir, PLATE))
    assert len(_areas(entry, sdir, PLATE, unblurred=True)) == n
    assert all(_inside(area, a) for a in _areas(entry, sdir, PLATE, unblurred=True))
    _verify_ok(pub)

    # Later nightly runs obey it and render the very same bytes, from the work cache or not.
    _nightly_rerun(raw, pub)
    assert hashlib.sha256(img.read_bytes()).hexdigest() == new_sha
    shutil.rmtree(pub / ".work")
    _nightly_rerun(raw, pub)
    assert hashlib.sha256(img.read_bytes()).hexdigest() == new_sha
    _verify_ok(pub)

    # The QA sheet flags the frame as edited and outlines the boxes left out.
    r = run_cli("review", str(sdir), "--out", str(tmp_path / "review.html"))
    assert r.returncode == 0 and "1 edited by request" in r.stdout, r.stderr
    page = (tmp_path / "review.html").read_text()
    card = page[page.index(f'id="f-{FID}"'):].split("</article>")[0]
    assert "request" in card.split('data-flags="')[1].split('"')[0].split()
    assert card.count('<rect class="box unblurred plate"') == n
    assert page.count('class="box unblurred') == n  # only in this frame


def test_unblur_refuses_faces_and_areas_without_a_plate_box(tree: tuple[Path, Path, Path]) -> None:
    _, sdir, _ = tree
    entry = _qa_entry(sdir, FID)
    face = _areas(entry, sdir, FACE)[0]
    around = (max(0, face[0] - 2), max(0, face[1] - 2), face[2] + 2, face[3] + 2)
    assert not any(_inside(around, a) for a in _areas(entry, sdir, PLATE))
    _, sign_area, _ = _sign_and_area(sdir)
    # Every area must enclose a plate redaction: one good area does not carry a face along.
    r = run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", ",".join(map(str, sign_area)),
                "--unblur", ",".join(map(str, around)), "--reason", "not a face")
    assert r.returncode == 2 and "no plate redaction" in r.stderr and "faces" in r.stderr, r.stderr
    assert f"--unblur {','.join(map(str, around))}:" in r.stderr
    # The error lists the frame's plate areas, so the operator can draw one that encloses it.
    assert ",".join(map(str, _areas(entry, sdir, PLATE)[0])) in r.stderr
    r = run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", "0,0,10,10", "--blur", "0,0,10,10",
                "--reason", "x")
    assert r.returncode == 2 and "exactly one of" in r.stderr
    r = run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", "0,0,5000,10", "--reason", "x")
    assert r.returncode == 2 and "reaches outside" in r.stderr
    assert not (sdir.parent / ".governance" / "requests.jsonl").exists()


def test_unblur_without_the_raw_frame_is_rejected_and_changes_nothing(tree: tuple[Path, Path, Path]) -> None:
    """A blur cannot be undone from the published image: without the raw frame the request is
    rejected (exit 1), recorded as such, and the image stays blurred."""
    from capture.session import SessionReader, delete_frames

    pub, sdir, raw = tree
    _, area, _ = _sign_and_area(sdir)
    delete_frames(raw, [r for r in SessionReader(raw).frames() if r.frame_id == FID], reason="retention")
    img = sdir / "images" / f"{FID}.jpg"
    before = img.read_bytes()
    r = run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", ",".join(map(str, area)),
                "--reason", "road sign")
    assert r.returncode == 0, r.stderr
    r = run_cli("request", "apply", str(sdir), "--config", str(CONFIGS / "nightly.toml"),
                "--sessions-root", str(raw.parent))
    assert r.returncode == 1 and "rejected" in r.stdout and "raw frame was deleted" in r.stdout, r.stdout
    assert img.read_bytes() == before
    chain = _chain(sdir)
    assert not [x for x in chain if x["type"] == "frame-override"]  # later runs have nothing to obey
    assert [x["status"] for x in chain if x["type"] == "request-outcome"] == ["rejected"]
    queue = audit.read_records(pub / ".governance" / "requests.jsonl")
    assert queue[-1]["type"] == "request-outcome" and queue[-1]["status"] == "rejected"
    _verify_ok(pub)


def test_overrides_collect_unblur_areas_per_frame() -> None:
    from pipeline.plan import Override, overrides_from

    recs = [{"type": "frame-override", "frame_id": "a", "action": "blur", "boxes": [[1, 2, 3, 4, 1]]},
            {"type": "frame-override", "frame_id": "a", "action": "unblur", "areas": [[0, 0, 50, 40]], "detect_key": "k1"},
            {"type": "frame-override", "frame_id": "a", "action": "unblur", "areas": [[60, 0, 90, 40]], "detect_key": "k2"},
            {"type": "frame-override", "frame_id": "b", "action": "unblur", "areas": [[5, 5, 9, 9]]},
            {"type": "frame-override", "frame_id": "b", "action": "remove"},
            {"type": "frame", "frame_id": "c", "action": "unblur", "areas": [[0, 0, 1, 1]]}]
    got = overrides_from(recs)
    assert got["a"] == Override(boxes=((1.0, 2.0, 3.0, 4.0, 1),),
                                unblur=((0.0, 0.0, 50.0, 40.0, "k1"), (60.0, 0.0, 90.0, 40.0, "k2")))
    assert got["b"] == Override(remove=True, unblur=((5.0, 5.0, 9.0, 9.0, ""),))  # no key: matches nothing
    assert "c" not in got


def test_unblur_applied_while_the_job_renders_is_not_undone(tree: tuple[Path, Path, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The job renders before it takes the session's lock; an unblur applied in between is
    re-rendered under the lock (never the stale, blurred render published over it)."""
    from pipeline import job
    from pipeline.config import NightlyConfig, load_config
    from pipeline.requests import ApplyOptions, RequestSpec, add_request, apply_requests

    pub, sdir, raw = tree
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    _, area, _ = _sign_and_area(sdir)
    before = _manifest_images(sdir)
    seen: dict[str, str] = {}
    publish = job._publish

    def unblur_then_publish(*args, **kw):  # type: ignore[no-untyped-def]
        add_request(sdir, RequestSpec(action="unblur", reason="late unblur", session_id=sdir.name, frame_id=FID,
                                      boxes=(area,)))
        assert not apply_requests(pub, ApplyOptions(config=cfg, sessions_root=raw.parent)).rejected
        seen["sha"] = _manifest_images(sdir)[f"images/{FID}.jpg"]
        return publish(*args, **kw)

    monkeypatch.setattr(job, "_publish", unblur_then_publish)
    (pub / ".work").rename(pub / ".work-old")  # so the job renders every frame before the request
    job.run_serial(job.JobOptions(sessions=(str(raw),), out=str(pub), config=cfg, progress=False, threads=1))
    images = _manifest_images(sdir)
    assert seen["sha"] != before[f"images/{FID}.jpg"] and images[f"images/{FID}.jpg"] == seen["sha"]
    assert {k: v for k, v in images.items() if FID not in k} == {k: v for k, v in before.items() if FID not in k}
    chain = _chain(sdir)
    last = [x for x in chain[max(i for i, x in enumerate(chain) if x["type"] == "run"):] if x.get("frame_id") == FID]
    assert last[-1]["plates_unblurred"] >= 1 and "re-rendered at publication" in last[-1]["note"]
    _verify_ok(pub)


def test_unblur_is_bound_to_the_detections_it_was_judged_on(tree: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A later run whose detections may differ (another redaction config or model) blurs the
    area again: nobody judged the boxes it finds there. The same unblur twice,
    with a blur request between, is rejected the second time (nothing left to unblur)."""
    pub, sdir, raw = tree
    sign, area, _ = _sign_and_area(sdir)
    img = sdir / "images" / f"{FID}.jpg"
    raw_rgb = _rgb(raw / "frames" / f"{FID}.jpg")
    spec = ["--frame", FID, "--unblur", ",".join(map(str, area)), "--reason", "road sign"]
    assert run_cli("request", "add", str(sdir), *spec).returncode == 0
    assert run_cli("request", "add", str(sdir), "--frame", FID, "--blur", "0,0,32,32", "--reason", "x").returncode == 0
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("request", "add", str(sdir), *spec)
    assert r.returncode == 2 and "still blurred" in r.stderr, r.stderr  # refused by the QA detections
    frame = [x for x in _chain(sdir) if x["type"] == "frame" and x["frame_id"] == FID][-1]
    assert frame["plates_unblurred"] >= 1 and frame["request_boxes"] == 1  # the blur kept the count
    freed = _freed(_qa_entry(sdir, FID), sdir, sign)
    assert float(np.abs(_rgb(img)[freed] - raw_rgb[freed]).mean()) < 4

    # The plate threshold the run used, now stated in the config: the same boxes, but another
    # redaction config, so other detections as far as anyone can tell without looking.
    thr = basis_run(_chain(sdir))["detectors"]["thresholds"]["plate"]
    other = tmp_path / "nightly-other.toml"
    other.write_text(Path(NIGHTLY).read_text().replace("[redact.detector]", f"[redact.detector]\nplate_threshold = {thr}"))
    (tmp_path / "notice.toml").write_bytes((CONFIGS / "notice.toml").read_bytes())
    r = run_cli("redact", str(raw), "--out", str(pub), "--config", str(other), "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert float(np.abs(_rgb(img)[freed] - raw_rgb[freed]).mean()) > 8  # blurred again
    frame = [x for x in _chain(sdir) if x["type"] == "frame" and x["frame_id"] == FID][-1]
    assert "plates_unblurred" not in frame and frame["request_boxes"] == 1  # the resident's blur holds
    _verify_ok(pub)


def test_an_unblurred_frame_still_gives_its_neighbours_their_carried_boxes_after_its_purge(
        tree: tuple[Path, Path, Path]) -> None:
    """The frame's own plate box on the sign is left out of its image only: once its raw file
    is purged and the work cache is gone, its neighbours still carry that box (from the QA
    detections), so the next run renders every image as before."""
    from capture.session import SessionReader, delete_frames

    pub, sdir, raw = tree
    fid = "000005"  # here the box on the sign is the frame's own detection, carried to 4 and 6
    _, area, _ = _sign_and_area(sdir, fid)
    assert run_cli("request", "add", str(sdir), "--frame", fid, "--unblur", ",".join(map(str, area)),
                   "--reason", "road sign").returncode == 0
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    entry = _qa_entry(sdir, fid)
    assert any(d.get("unblurred") and not d["carried"] for d in entry["detections"])
    images = _manifest_images(sdir)
    delete_frames(raw, [x for x in SessionReader(raw).frames() if x.frame_id == fid], reason="retention")
    shutil.rmtree(pub / ".work")
    _nightly_rerun(raw, pub)
    assert _manifest_images(sdir) == images
    _verify_ok(pub)


def test_purge_holds_the_raw_frame_a_queued_unblur_needs(tree: tuple[Path, Path, Path]) -> None:
    """An unblur is rejected once the raw frame is gone: the retention purge deletes the
    session's other raw frames and holds that one until the request is applied; the next
    purge deletes it."""
    pub, sdir, raw = tree
    _, area, _ = _sign_and_area(sdir)
    r = run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", ",".join(map(str, area)),
                "--reason", "road sign")
    assert r.returncode == 0, r.stderr
    rid = audit.read_records(pub / ".governance" / "requests.jsonl")[-1]["request_id"]
    n = len(list((raw / "frames").iterdir()))
    r = run_cli("purge", str(raw.parent), "--raw-older-than", "1h", "--publish-dir", str(pub))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"purged {raw.name}: {n - 1} raw frames" in r.stdout and f"held for queued unblur request(s) {rid}" in r.stdout
    assert [p.name for p in (raw / "frames").iterdir()] == [f"{FID}.jpg"]
    rec = _chain(sdir)[-1]
    assert rec["type"] == "purge" and rec["frames_deleted"] == n - 1
    assert rec["held_for_requests"] == [{"frame_id": FID, "request_ids": [rid]}]
    # Only the held frame left: the session is kept, nothing is recorded.
    r = run_cli("purge", str(raw.parent), "--raw-older-than", "1h", "--publish-dir", str(pub))
    assert r.returncode == 0 and f"kept    {raw.name}: 1 raw frame(s) held for queued unblur" in r.stdout, r.stdout
    assert _chain(sdir)[-1] == rec
    img = sdir / "images" / f"{FID}.jpg"
    before = img.read_bytes()
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0 and "applied" in r.stdout, r.stdout + r.stderr
    assert img.read_bytes() != before
    r = run_cli("purge", str(raw.parent), "--raw-older-than", "1h", "--publish-dir", str(pub))
    assert r.returncode == 0 and f"purged {raw.name}: 1 raw frames" in r.stdout, r.stdout
    assert list((raw / "frames").iterdir()) == []
    _verify_ok(pub)


def test_purge_of_an_encrypted_session_keeps_its_key_while_a_frame_is_held(tmp_path: Path) -> None:
    """Crypto-shredding makes every frame of the session unreadable: with a frame held for an
    unblur the key stays (the other frames' files go); once it is applied, the next purge
    destroys the key."""
    from test_purge import _publish

    from capture.crypto import KEY_FILE, generate_keypair, load_public_key
    from pipeline.sample import make_sample_session

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    root, pub = tmp_path / "sessions", tmp_path / "pub"
    sess = make_sample_session(root, frames=5, recipient_public_key=load_public_key(tmp_path / "k.pub.pem"))
    _publish(root, pub, env_key=tmp_path / "k.pem")
    sdir = pub / sess.name
    _, area, _ = _sign_and_area(sdir)
    assert run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", ",".join(map(str, area)),
                   "--reason", "road sign").returncode == 0
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(pub))
    assert r.returncode == 0 and "purged" in r.stdout and "crypto-shredding" not in r.stdout, r.stdout
    assert (sess / KEY_FILE).exists() and len(list((sess / "frames").iterdir())) == 1
    assert not _chain(sdir)[-1]["crypto_shredded"]
    env = {"STREETVEIL_NIGHTLY__DECRYPT__PRIVATE_KEY": str(tmp_path / "k.pem")}
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(root), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("purge", str(root), "--raw-older-than", "1h", "--publish-dir", str(pub))
    assert r.returncode == 0 and "session key (crypto-shredding)" in r.stdout, r.stdout
    assert not (sess / KEY_FILE).exists() and _chain(sdir)[-1]["crypto_shredded"]
    _verify_ok(pub)


def test_an_unblur_holds_its_frame_for_a_bounded_time_and_only_on_a_sound_queue(
        tree: tuple[Path, Path, Path]) -> None:
    """A hold is bounded (an encrypted session's key would keep every frame readable in
    backups): past --unblur-hold the frame is purged, the purge names the request and apply
    rejects it. A request queue that does not verify stops the purge before it deletes."""
    pub, sdir, raw = tree
    _, area, _ = _sign_and_area(sdir)
    assert run_cli("request", "add", str(sdir), "--frame", FID, "--unblur", ",".join(map(str, area)),
                   "--reason", "road sign").returncode == 0
    rid = audit.read_records(pub / ".governance" / "requests.jsonl")[-1]["request_id"]
    n = len(list((raw / "frames").iterdir()))
    r = run_cli("purge", str(raw.parent), "--raw-older-than", "1h", "--publish-dir", str(pub), "--dry-run")
    assert r.returncode == 0 and f"would purge {raw.name}: {n - 1} raw frames" in r.stdout and rid in r.stdout
    assert len(list((raw / "frames").iterdir())) == n
    # A damaged queue: nothing is deleted, the error names the file.
    q = pub / ".governance" / "requests.jsonl"
    good = q.read_bytes()
    q.write_bytes(good.replace(b'"unblur"', b'"blur"', 1))
    r = run_cli("purge", str(raw.parent), "--raw-older-than", "1h", "--publish-dir", str(pub))
    assert r.returncode != 0 and "requests.jsonl" in r.stderr and "does not verify" in r.stderr, r.stderr
    assert len(list((raw / "frames").iterdir())) == n
    q.write_bytes(good)
    r = run_cli("purge", str(raw.parent), "--raw-older-than", "1h", "--publish-dir", str(pub), "--unblur-hold", "0s")
    assert r.returncode == 0 and f"purged {raw.name}: {n} raw frames" in r.stdout, r.stdout
    assert f"queued unblur request(s) {rid} held their frames" in r.stdout
    assert _chain(sdir)[-1]["hold_expired_for_requests"] == [rid]
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 1 and "raw frame was deleted" in r.stdout, r.stdout
    _verify_ok(pub)
