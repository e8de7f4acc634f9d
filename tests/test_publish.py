"""The publish tree without the detector: GeoJSON builders, notice, manifest, the atomic
publish transaction (as the governance commands will use it) and ``audit verify``."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIGS, read_ogr

from capture.types import Fix, FrameRecord
from pipeline import audit, geojson, qadata
from pipeline.config import NoticeConfig, load_config
from pipeline.manifest import build_manifest, verify_manifest
from pipeline.notice import SessionFacts, render_html, render_text
from pipeline.publish import PublishError, PublishTxn, append_session_records, swap_into_place
from pipeline.store import Store
from pipeline.verify import verify_tree

T0 = datetime(2026, 11, 25, 1, 30, tzinfo=UTC)
SID = "20261125T013000Z-test"


def _rec(i: int, *, pos: bool = True) -> FrameRecord:
    kw: dict[str, Any] = {"lat": 35.68 + i * 1e-4, "lon": 139.76 + i * 1e-4, "heading": 200.0 + i} if pos else {}
    return FrameRecord(frame_id=f"{i:06d}", time=T0 + timedelta(seconds=i), file=f"frames/{i:06d}.jpg",
                       sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                       position_source="fix" if pos else "none", **kw)


# ---------------------------------------------------------------------------- GeoJSON (pure)


def test_frame_feature_properties_and_null_geometry() -> None:
    f = geojson.frame_feature(_rec(1), session_id=SID, image="images/000001.jpg", sha256="ab" * 32,
                              faces=2, plates=1, width=1280, height=720)
    assert f["geometry"] == {"type": "Point", "coordinates": [139.7601, 35.6801]}
    p = f["properties"]
    assert p["frame_id"] == "000001" and p["time"] == "2026-11-25T01:30:01.000Z"
    assert (p["faces"], p["plates"], p["heading"], p["position_source"]) == (2, 1, 201.0, "fix")
    none = geojson.frame_feature(_rec(2, pos=False), session_id=SID, image="images/000002.jpg",
                                 sha256="cd" * 32, faces=0, plates=0, width=None, height=None)
    assert none["geometry"] is None and none["properties"]["position_source"] == "none"


def test_feature_collection_is_sorted_and_deterministic() -> None:
    feats = [geojson.frame_feature(_rec(i), session_id=SID, image=f"images/{i:06d}.jpg", sha256="0" * 64,
                                   faces=0, plates=0, width=1, height=1) for i in (3, 1, 2)]
    fc = geojson.feature_collection(feats)
    assert [f["id"] for f in fc["features"]] == ["000001", "000002", "000003"]
    assert geojson.dumps(fc) == geojson.dumps(geojson.feature_collection(reversed(feats)))


def _fix(i: int) -> Fix:
    return Fix(time=T0 + timedelta(seconds=i), lat=35.68 + i * 1e-4, lon=139.76)


@pytest.mark.parametrize(
    ("n", "inside", "gtype", "points"),
    [
        (5, set(), "LineString", 5),
        (7, {3}, "MultiLineString", 6),  # split around the excluded point
        (5, {0, 1}, "LineString", 3),  # zone at the start: just shorter
        (3, {1}, None, 0),  # nothing of two points or more left
        (1, set(), None, 0),
    ],
)
def test_track_feature(n: int, inside: set[int], gtype: str | None, points: int) -> None:
    fixes = [_fix(i) for i in range(n)]
    hidden = {(f.lat, f.lon) for i, f in enumerate(fixes) if i in inside}
    fc = geojson.track_feature(fixes, session_id=SID, exclude=lambda la, lo: (la, lo) in hidden)
    feat = fc["features"][0]
    assert (feat["geometry"] or {}).get("type") == gtype
    assert feat["properties"]["points"] == points


def test_track_across_the_antimeridian_is_cut_at_180(tmp_path: Path) -> None:
    """RFC 7946 3.1.9: a line crossing ±180 is a MultiLineString cut there, not a line round the
    world; GDAL reads it, and its length is the short way."""
    lons = [179.9996, 179.9998, -179.9999, -179.9997]  # ~20 m steps eastwards across the line
    fixes = [Fix(time=T0 + timedelta(seconds=i), lat=-16.5 + i * 1e-5, lon=lo) for i, lo in enumerate(lons)]
    feat = geojson.track_feature(fixes, session_id=SID)["features"][0]
    g = feat["geometry"]
    assert g["type"] == "MultiLineString" and len(g["coordinates"]) == 2
    west, east = g["coordinates"]
    assert west[-1][0] == 180.0 and east[0][0] == -180.0 and west[-1][1] == east[0][1]
    assert -16.49999 < west[-1][1] < -16.49998  # the latitude interpolated at the crossing
    assert feat["properties"]["points"] == 4 and 70 < feat["properties"]["length_m"] < 80  # not 40,000 km
    path = tmp_path / "track.geojson"
    path.write_bytes(geojson.dumps(geojson.track_feature(fixes, session_id=SID)))
    _, _, geoms = read_ogr(path)
    assert geoms[0].geom_type == "MultiLineString" and len(geoms[0].geoms) == 2
    # Westwards too, and combined with an exclusion-zone split.
    back = geojson.split_antimeridian([(0.0, -179.9, "a"), (1.0, 179.9, "b"), (2.0, 179.8, "c")])
    assert [[p[1] for p in line] for line in back] == [[-179.9, -180.0], [180.0, 179.9, 179.8]]
    assert back[0][-1][0] == pytest.approx(0.5)


def test_track_falls_back_to_frame_positions() -> None:
    fc = geojson.track_feature([], session_id=SID, frames=[_rec(1), _rec(2, pos=False), _rec(3)])
    feat = fc["features"][0]
    assert feat["geometry"]["type"] == "LineString" and len(feat["geometry"]["coordinates"]) == 2
    assert feat["properties"]["source"] == "frame-positions"


# ---------------------------------------------------------------------------- notice


def test_notice_has_the_guidebook_items_and_escapes_html() -> None:
    base = load_config(CONFIGS / "notice.toml", NoticeConfig, kind="notice", environ={})
    notice = base.model_copy(update={"operator": "Roads & <Bridges> Co."})
    facts = SessionFacts(SID, "2026-11-25T01:30:00.000Z to 2026-11-25T01:31:00.000Z", 7, "2026-10-01")
    html = render_html(notice, facts)
    text = render_text(notice, facts)
    assert "Roads &amp; &lt;Bridges&gt; Co." in html and "<Bridges>" not in html
    assert "Roads & <Bridges> Co." in text
    for item in (notice.purpose, notice.captured, notice.retention, notice.contact, notice.details_url,
                 notice.third_parties, notice.requests, *notice.security_measures):
        assert item in text
    assert html.count("<li>") == len(notice.security_measures)
    assert "version 2026-10-01" in text and f"version {notice.version}" in text
    assert render_html(notice, facts) == html  # deterministic: no render time


@pytest.mark.parametrize(("method", "words"), [("blur", "blurred"), ("pixelate", "pixelated"),
                                              ("fill", "covered with solid boxes")])
def test_notice_names_the_redaction_method(method: str, words: str) -> None:
    """The notice's own sentence on faces and plates follows [redact] method; the operator's
    paragraphs cannot, so a notice that says 'blur' while pixelating is reported."""
    from pipeline.notice import notice_mismatch

    notice = load_config(CONFIGS / "notice.toml", NoticeConfig, kind="notice", environ={})
    facts = SessionFacts(SID, "2026-11-25T01:30:00.000Z to 2026-11-25T01:31:00.000Z", 7, "2026-10-01", method=method)
    sentence = f"Faces and licence plates are {words} before any use."
    assert sentence in render_html(notice, facts)
    assert sentence in " ".join(render_text(notice, facts).split())
    why = notice_mismatch(notice, method)
    assert (why is None) == (method == "blur")  # configs/notice.toml says "blurred irreversibly"
    if why:
        assert "processing" in why and f'method = "{method}"' in why
    with pytest.raises(ValueError, match="unknown redaction method"):
        SessionFacts(SID, "x", 1, "v", method="smudge")


# ---------------------------------------------------------------------------- manifest


def test_manifest_build_and_verify(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"abc")
    (tmp_path / "frames.geojson").write_bytes(b"{}")
    (tmp_path / "audit.jsonl").write_bytes(b"not listed\n")
    man = build_manifest(tmp_path, SID)
    doc = json.loads(man)
    assert set(doc["files"]) == {"images/a.jpg", "frames.geojson"}
    assert doc["files"]["images/a.jpg"] == {"sha256": hashlib.sha256(b"abc").hexdigest(), "size": 3}
    (tmp_path / "manifest.json").write_bytes(man)
    assert verify_manifest(tmp_path, "S") == []
    (tmp_path / "images" / "a.jpg").write_bytes(b"abd")
    (tmp_path / "images" / "b.jpg").write_bytes(b"new")
    (tmp_path / "frames.geojson").unlink()
    assert verify_manifest(tmp_path, "S") == [
        "S/frames.geojson: listed in the manifest but missing",
        "S/images/a.jpg: sha256 differs from the manifest (file altered)",
        "S/images/b.jpg: not listed in the manifest (unexpected file)",
    ]


# ---------------------------------------------------------------------------- transactions


def _publish(out: Path, frames: list[int], *, tag: bytes = b"") -> None:
    with PublishTxn.open(Store(str(out)), SID) as txn:
        records = []
        for i in frames:
            data = b"JPEG" + tag + bytes([i])
            feat = geojson.frame_feature(_rec(i), session_id=SID, image=f"images/{i:06d}.jpg",
                                         sha256=hashlib.sha256(data).hexdigest(), faces=1, plates=0,
                                         width=1, height=1)
            txn.put_image(f"{i:06d}", feat, data=data)
            records.append({"type": "frame", "frame_id": f"{i:06d}", "status": "ok",
                            "output_sha256": hashlib.sha256(data).hexdigest()})
        txn.write_file("notice.txt", b"notice\n")
        txn.commit(records, {"run_id": "test"})


def test_commit_publishes_atomically_and_verifies(tmp_path: Path) -> None:
    _publish(tmp_path, [1, 2, 3])
    s = tmp_path / SID
    assert sorted(p.name for p in (s / "images").iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    rep = verify_tree(tmp_path)
    assert rep.ok, rep.problems
    assert rep.sessions == (SID,) and rep.files == 5  # 3 images, frames.geojson, notice.txt
    inode = s.stat().st_ino
    _publish(tmp_path, [1, 2], tag=b"v2")  # a new version replaces the folder as a whole
    assert s.stat().st_ino != inode
    assert sorted(p.name for p in (s / "images").iterdir()) == ["000001.jpg", "000002.jpg"]
    assert verify_tree(tmp_path).ok
    assert list((tmp_path / ".staging").iterdir()) == []  # no leftovers
    recs = audit.read_records(s / "audit.jsonl")
    assert [r["type"] for r in recs].count("publish") == 2  # the chain continues across versions


def test_published_files_are_readable_by_the_gis_team(tmp_path: Path) -> None:
    import stat

    old = os.umask(0o022)
    try:
        _publish(tmp_path, [1, 2])
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / SID).rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"000001.jpg", "frames.geojson", "manifest.json", "notice.txt", "audit.jsonl"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p  # as the umask allows, not mkstemp's 0600


def test_failed_transaction_leaves_the_published_version(tmp_path: Path) -> None:
    _publish(tmp_path, [1, 2])
    before = (tmp_path / SID / "manifest.json").read_bytes()
    with pytest.raises(RuntimeError), PublishTxn.open(Store(str(tmp_path)), SID) as txn:
        txn.put_image("000009", {"properties": {}}, data=b"x")
        raise RuntimeError("killed half-way")
    assert (tmp_path / SID / "manifest.json").read_bytes() == before
    assert list((tmp_path / ".staging").iterdir()) == []
    assert verify_tree(tmp_path).ok


def test_put_image_refuses_a_damaged_work_file(tmp_path: Path) -> None:
    src = tmp_path / "w.jpg"
    src.write_bytes(b"short")
    with PublishTxn.open(Store(str(tmp_path / "pub")), SID) as txn, pytest.raises(PublishError, match="expected"):
        txn.put_image("000001", {}, source=src, sha256="0" * 64)


def test_edit_transaction_as_governance_would(tmp_path: Path) -> None:
    """Takedown + extra blur through keep_published: re-published atomically, still verifies;
    the published files are hard-linked, never modified in place."""
    _publish(tmp_path, [1, 2, 3])
    pub = tmp_path / SID
    old2 = (pub / "images" / "000002.jpg").read_bytes()
    with PublishTxn.open(Store(str(tmp_path)), SID, keep_published=True) as txn:
        assert txn.image_ids() == ["000001", "000002", "000003"]
        assert txn.remove_frame("000001")
        new = b"JPEG-more-blur"
        feat = dict(txn.features["000002"])
        txn.put_image("000002", feat, data=new)
        txn.commit([{"type": "request", "ref": "REQ-1", "frame_id": "000001", "action": "remove"},
                    {"type": "request", "ref": "REQ-2", "frame_id": "000002", "action": "blur", "status": "ok",
                     "output_sha256": hashlib.sha256(new).hexdigest()}])
    assert not (pub / "images" / "000001.jpg").exists()
    assert (pub / "images" / "000002.jpg").read_bytes() == b"JPEG-more-blur"
    fc = json.loads((pub / "frames.geojson").read_bytes())
    assert [f["id"] for f in fc["features"]] == ["000002", "000003"]
    assert verify_tree(tmp_path).ok
    assert old2 != b"JPEG-more-blur"


def _qa_entry(i: int, data: bytes) -> dict[str, Any]:
    return qadata.entry(f"{i:06d}", image_sha256=hashlib.sha256(data).hexdigest(), width=64, height=48,
                        detect_key=f"{i:064d}", boxes=[(1.5, 2, 30, 40, 0, 0.91, 0), (5, 6, 7, 8.25, 1, 0.42, 1)])


def _qa_file(out: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    ref = [r for r in audit.read_records(out / SID / "audit.jsonl") if r["type"] == "publish"][-1]["qa_detections"]
    f = out / ref["file"]
    assert hashlib.sha256(f.read_bytes()).hexdigest() == ref["sha256"]
    return f, qadata.decode(f.read_bytes())


def test_qa_detections_follow_every_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PUBLISH_DIR/.qa/<session>/: written by each commit for the published frames only, named
    by the publish record, old versions pruned; an edit keeps the entries of what it keeps."""
    import pipeline.publish as publish

    store = Store(str(tmp_path))
    imgs = {i: b"JPEG" + bytes([i]) for i in (1, 2, 3)}
    with PublishTxn.open(store, SID) as txn:
        for i, data in imgs.items():
            feat = geojson.frame_feature(_rec(i), session_id=SID, image=f"images/{i:06d}.jpg",
                                         sha256=hashlib.sha256(data).hexdigest(), faces=1, plates=1, width=64, height=48)
            txn.put_image(f"{i:06d}", feat, data=data, qa=_qa_entry(i, data))
        txn.commit([{"type": "frame", "frame_id": f"{i:06d}", "status": "ok",
                     "output_sha256": hashlib.sha256(d).hexdigest()} for i, d in imgs.items()])
    f1, entries = _qa_file(tmp_path)
    assert f1.parent == tmp_path / ".qa" / SID and sorted(entries) == ["000001", "000002", "000003"]
    assert entries["000001"]["detections"] == [
        {"class": "face", "box": [1.5, 2.0, 30.0, 40.0], "score": 0.91, "carried": False},
        {"class": "plate", "box": [5.0, 6.0, 7.0, 8.25], "score": 0.42, "carried": True}]
    assert verify_tree(tmp_path).ok

    # An edit: takedown of 1, block-level blur of 2 (no new boxes: its entry stays, for the new bytes).
    new2 = b"JPEG-blurred-2"
    with PublishTxn.open(store, SID, keep_published=True) as txn:
        assert sorted(txn.qa or {}) == ["000001", "000002", "000003"]
        txn.remove_frame("000001")
        txn.put_image("000002", txn.features["000002"], data=new2)
        txn.commit([{"type": "frame", "frame_id": "000002", "status": "ok",
                     "output_sha256": hashlib.sha256(new2).hexdigest()}])
    f2, entries = _qa_file(tmp_path)
    assert sorted(entries) == ["000002", "000003"] and not f1.exists()  # the old version is gone
    assert entries["000002"]["image_sha256"] == hashlib.sha256(new2).hexdigest()
    assert entries["000002"]["detections"] == _qa_entry(2, imgs[2])["detections"]
    assert verify_tree(tmp_path).ok

    # Killed after writing the next sidecar, before the swap: the chain still names f2, intact.
    def killed(*a: Any) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(publish, "swap_into_place", killed)
    with pytest.raises(RuntimeError), PublishTxn.open(store, SID, keep_published=True) as txn:
        txn.remove_frame("000003")
        txn.commit([])
    assert len(list(f2.parent.iterdir())) == 2 and _qa_file(tmp_path)[0] == f2
    assert verify_tree(tmp_path).ok
    monkeypatch.undo()
    with PublishTxn.open(store, SID, keep_published=True) as txn:
        txn.commit([])
    assert [p.name for p in f2.parent.iterdir()] == [f2.name]  # the orphan is pruned


def test_forged_image_with_forged_manifest_still_fails(tmp_path: Path) -> None:
    _publish(tmp_path, [1, 2])
    pub = tmp_path / SID
    forged = b"unredacted"
    (pub / "images" / "000002.jpg").write_bytes(forged)
    man = json.loads((pub / "manifest.json").read_bytes())
    man["files"]["images/000002.jpg"] = {"sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)}
    (pub / "manifest.json").write_text(json.dumps(man, indent=1, sort_keys=True) + "\n")
    rep = verify_tree(tmp_path)
    assert not rep.ok
    assert f"{SID}/manifest.json: sha256 differs from the one in the last publish record" in rep.problems[0]
    assert any(p.startswith(f"{SID}/images/000002.jpg: its sha256 is in no audit record") for p in rep.problems)


def test_in_place_appends_and_truncation(tmp_path: Path) -> None:
    _publish(tmp_path, [1, 2])
    append_session_records(tmp_path, SID, [{"type": "purge", "frames_deleted": 2}])
    assert verify_tree(tmp_path).ok
    log = tmp_path / SID / "audit.jsonl"
    log.write_bytes(b"".join(x + b"\n" for x in log.read_bytes().splitlines()[:-1]))  # drop the purge
    rep = verify_tree(tmp_path)
    assert not rep.ok
    assert rep.problems[0].startswith(f"{SID}/audit.jsonl: the record the index holds as its head")


def test_verify_single_session_and_unindexed(tmp_path: Path) -> None:
    _publish(tmp_path, [1])
    assert verify_tree(tmp_path / SID).ok
    (tmp_path / "audit-index.jsonl").unlink()
    rep = verify_tree(tmp_path)
    assert any("not recorded in audit-index.jsonl" in p for p in rep.problems)


def test_swap_replaces_and_cleans(tmp_path: Path) -> None:
    final, staging = tmp_path / "s", tmp_path / ".staging" / "s.new"
    final.mkdir()
    (final / "old").write_text("old")
    staging.mkdir(parents=True)
    (staging / "new").write_text("new")
    swap_into_place(staging, final)
    assert os.listdir(final) == ["new"] and not staging.exists()


def test_geojson_opens_with_gdal(tmp_path: Path) -> None:
    with PublishTxn.open(Store(str(tmp_path)), SID) as txn:
        for i, pos in ((1, True), (2, False), (3, True)):
            data = bytes([i])
            txn.put_image(f"{i:06d}", geojson.frame_feature(
                _rec(i, pos=pos), session_id=SID, image=f"images/{i:06d}.jpg",
                sha256=hashlib.sha256(data).hexdigest(), faces=i, plates=0, width=1, height=1), data=data)
        txn.write_file("track.geojson", geojson.dumps(geojson.track_feature([_fix(i) for i in range(4)], session_id=SID)))
        txn.commit([])
    meta, fields, geoms = read_ogr(tmp_path / SID / "frames.geojson")
    assert meta["crs"] == "EPSG:4326" and meta["geometry_type"] == "Point"
    assert fields["frame_id"] == ["000001", "000002", "000003"]
    assert [g is None for g in geoms] == [False, True, False]  # no position: null geometry
    assert fields["faces"] == [1, 2, 3]
    meta, _, geoms = read_ogr(tmp_path / SID / "track.geojson")
    assert geoms[0].geom_type == "LineString" and len(geoms[0].coords) == 4
