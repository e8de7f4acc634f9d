"""Takedown and exclusion-zone requests, refused requests, and forged edits (see
test_requests.py for extra blur)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, run_cli
from PIL import Image
from test_requests import (
    NIGHTLY,
    _chain,
    _features,
    _manifest_images,
    _nightly_rerun,
    _verify_ok,
    tree,
)

from pipeline import audit

__all__ = ["tree"]  # the fixture, shared with test_requests.py


# ---------------------------------------------------------------------------- takedown, zones


def test_remove_takes_image_and_feature_down_for_good(tree: tuple[Path, Path, Path]) -> None:
    pub, sdir, raw = tree
    fid = "000006"
    r = run_cli("request", "add", str(sdir), "--frame", fid, "--remove", "--reason", "owner objected",
                "--requester-ref", "CASE-9")
    assert r.returncode == 0, r.stderr
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY, "--sessions-root", str(raw.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (sdir / "images" / f"{fid}.jpg").exists()
    assert fid not in _features(sdir) and f"images/{fid}.jpg" not in _manifest_images(sdir)
    assert len(_features(sdir)) == 7
    assert "Images published</dt><dd>7</dd>" in (sdir / "notice.html").read_text()
    last = [x for x in _chain(sdir) if x["type"] == "frame" and x["frame_id"] == fid][-1]
    assert last["status"] == "excluded" and last["reason"] == "removed-by-request" and "lat" not in last
    # Its boxes left the QA detections with it (they are kept for published frames only).
    qa = [x for x in _chain(sdir) if x["type"] == "publish"][-1]["qa_detections"]
    ids = [json.loads(x)["frame_id"] for x in (pub / qa["file"]).read_bytes().splitlines()]
    assert fid not in ids and sorted(ids) == sorted(_features(sdir))
    _verify_ok(pub)
    others = _manifest_images(sdir)
    _nightly_rerun(raw, pub)  # the next run leaves it out too
    assert not (sdir / "images" / f"{fid}.jpg").exists() and fid not in _features(sdir)
    # ... but keeps it in the carry neighbourhood: its neighbours (000005, 000007) are not
    # re-rendered without the boxes found in it.
    assert _manifest_images(sdir) == others
    _verify_ok(pub)


def test_zone_request_removes_frames_everywhere_and_binds_later_runs(tree: tuple[Path, Path, Path],
                                                                      tmp_path: Path) -> None:
    from capture.geodesy import offset_m

    pub, sdir, raw = tree
    feats = _features(sdir)
    inside = ["000004", "000005"]
    lon0, lat0 = feats[inside[0]]["geometry"]["coordinates"]
    lon1, lat1 = feats[inside[1]]["geometry"]["coordinates"]
    # A square around the two frames (they are ~5 m apart), 2 m margin.
    s, w = offset_m(min(lat0, lat1), min(lon0, lon1), -2, -2)
    n, e = offset_m(max(lat0, lat1), max(lon0, lon1), 2, 2)
    zone = tmp_path / "zone.geojson"
    zone.write_text(json.dumps({"type": "Feature", "properties": {"name": "home"}, "geometry": {
        "type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}))
    r = run_cli("request", "add", str(sdir), "--zone", str(zone), "--reason", "private road")
    assert r.returncode == 2 and "give the folder" in r.stderr
    r = run_cli("request", "add", str(pub), "--zone", str(zone), "--reason", "private road", "--requester-ref", "Z-1")
    assert r.returncode == 0, r.stderr
    track_before = json.loads((sdir / "track.geojson").read_bytes())["features"][0]["properties"]["points"]
    r = run_cli("request", "apply", str(pub), "--config", NIGHTLY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(set(feats) - set(_features(sdir))) == inside
    track = json.loads((sdir / "track.geojson").read_bytes())["features"][0]
    assert track["properties"]["points"] < track_before
    zf = json.loads((pub / ".governance" / "exclusion-zones.geojson").read_bytes())
    assert [f["properties"]["request_id"] for f in zf["features"]] == \
        [x["request_id"] for x in audit.read_records(pub / ".governance" / "requests.jsonl") if x["type"] == "request"]
    # The polygon (it maps where the requester lives) stays out of the published chain.
    zreq = [x for x in _chain(sdir) if x["type"] == "request"][-1]
    assert "zone" not in zreq and len(zreq["zone_sha256"]) == 64 and "Polygon" not in (sdir / "audit.jsonl").read_text()
    removed = [x for x in _chain(sdir) if x["type"] == "frame" and x.get("request_id") == zreq["request_id"]]
    assert sorted(x["frame_id"] for x in removed) == inside and not any("lat" in x for x in removed)
    _verify_ok(pub)

    _nightly_rerun(raw, pub)  # reads .governance/exclusion-zones.geojson as well
    assert sorted(set(feats) - set(_features(sdir))) == inside
    run = [x for x in _chain(sdir) if x["type"] == "run"][-1]  # names the zones it obeyed, by hash
    zsha = hashlib.sha256((pub / ".governance" / "exclusion-zones.geojson").read_bytes()).hexdigest()
    assert run["request_zones_sha256"] == zsha and run["exclusion_zones_sha256"] is None
    latest = {x["frame_id"]: x for x in _chain(sdir) if x["type"] == "frame"}
    assert all(latest[f]["status"] == "excluded" and latest[f]["reason"] == "exclusion-zone" for f in inside)
    _verify_ok(pub)

    (pub / ".governance" / "exclusion-zones.geojson").unlink()
    r = run_cli("audit", "verify", str(pub))
    assert r.returncode == 1 and "later runs would publish the area again" in r.stderr


# ---------------------------------------------------------------------------- forgery, bad input


def test_forged_edit_of_a_published_image_fails_verify(tree: tuple[Path, Path, Path]) -> None:
    pub, sdir, _ = tree
    img = sdir / "images" / "000002.jpg"
    rgb = np.asarray(Image.open(img)).copy()
    rgb[100:200, 100:300] = rgb[100:200, 100:300] // 2  # an edit by hand, outside streetveil
    Image.fromarray(rgb).save(img, quality=90)
    r = run_cli("audit", "verify", str(pub))
    assert r.returncode == 1
    assert re.search(r"FIRST PROBLEM: \S+/images/000002\.jpg: (size|sha256) .*differs from the manifest", r.stderr)
    # Forging the manifest and the feature too is still caught by the chain.
    sha = hashlib.sha256(img.read_bytes()).hexdigest()
    man = json.loads((sdir / "manifest.json").read_bytes())
    man["files"]["images/000002.jpg"] = {"sha256": sha, "size": img.stat().st_size}
    (sdir / "manifest.json").write_text(json.dumps(man))
    r = run_cli("audit", "verify", str(pub))
    assert r.returncode == 1 and "images/000002.jpg: its sha256 is in no audit record" in r.stderr


@pytest.mark.parametrize(("kw", "message"), [
    ({"action": "blur", "frame_id": "000002", "boxes": ((10, 10, 2000, 20),)}, "reaches outside the 1280x720 image"),
    ({"action": "blur", "frame_id": "000002", "boxes": ((30, 10, 20, 20),)}, "x2 > x1"),
    ({"action": "blur", "frame_id": "000002", "boxes": ()}, "needs at least one --blur"),
    ({"action": "blur", "frame_id": "999999", "boxes": ((0, 0, 10, 10),)}, "frame 999999 is not published"),
    ({"action": "remove", "frame_id": "999999"}, "no frame 999999"),
    ({"action": "remove", "frame_id": "../x"}, "not a safe file name"),
    ({"action": "remove", "frame_id": "000002", "requester_ref": "jane@example.org"}, "opaque case number"),
    ({"action": "remove", "frame_id": "000002", "reason": "  "}, "--reason must say why"),
])
def test_bad_requests_are_refused(tree: tuple[Path, Path, Path], kw: dict, message: str) -> None:  # type: ignore[type-arg]
    from pipeline.errors import PipelineError
    from pipeline.requests import RequestSpec, add_request

    _, sdir, _ = tree
    args = {"reason": "test", "session_id": sdir.name, **kw}
    with pytest.raises(PipelineError, match=re.escape(message)) as e:
        add_request(sdir, RequestSpec(**args))
    assert e.value.exit_code == 2
    assert not (sdir.parent / ".governance" / "requests.jsonl").exists()


def test_parse_box() -> None:
    from pipeline.errors import PipelineError
    from pipeline.requests import parse_box

    assert parse_box("1, 2,3,4") == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "1.5,2,3,4"):
        with pytest.raises(PipelineError, match="four integers"):
            parse_box(bad)


def test_cli_usage_errors(tree: tuple[Path, Path, Path]) -> None:
    _, sdir, _ = tree
    r = run_cli("request", "add", str(sdir), "--frame", "000002", "--remove", "--blur", "0,0,10,10", "--reason", "x")
    assert r.returncode == 2 and "exactly one of" in r.stderr


def test_reason_with_personal_data_is_refused(tree: tuple[Path, Path, Path]) -> None:
    _, sdir, _ = tree
    r = run_cli("request", "add", str(sdir), "--frame", "000002", "--remove",
                "--reason", "asked by taro.yamada@example.jp")
    assert r.returncode == 2 and "e-mail address" in r.stderr
    assert not (sdir.parent / ".governance" / "requests.jsonl").exists()


def test_request_for_a_withdrawn_frame_is_rejected_and_recorded(tree: tuple[Path, Path, Path]) -> None:
    pub, sdir, _ = tree
    for args in (["--remove"], ["--blur", "0,0,32,32"]):
        r = run_cli("request", "add", str(sdir), "--frame", "000007", *args, "--reason", "twice")
        assert r.returncode == 0, r.stderr
    r = run_cli("request", "apply", str(sdir), "--config", NIGHTLY)
    assert r.returncode == 1, r.stdout + r.stderr  # the blur came after the removal
    assert "rejected" in r.stdout and "not published" in r.stdout
    outs = [x for x in audit.read_records(pub / ".governance" / "requests.jsonl") if x["type"] == "request-outcome"]
    assert sorted(o["status"] for o in outs) == ["applied", "rejected"]
    assert [x["status"] for x in _chain(sdir) if x["type"] == "request-outcome"] == ["applied", "rejected"]
    _verify_ok(pub)


# ---------------------------------------------------------------------------- the GIS folder holds no private data


def _coordinate_pairs(obj: object) -> list[tuple[float, float]]:
    """Every (lon, lat) a JSON document holds: [lon, lat(, alt)] arrays and objects with lat/lon."""
    out: list[tuple[float, float]] = []
    if isinstance(obj, dict):
        if isinstance(obj.get("lat"), float) and isinstance(obj.get("lon"), float):
            out.append((obj["lon"], obj["lat"]))
        for v in obj.values():
            out += _coordinate_pairs(v)
    elif isinstance(obj, list):
        if 2 <= len(obj) <= 3 and all(isinstance(v, float) for v in obj):
            out.append((obj[0], obj[1]))
        for v in obj:
            out += _coordinate_pairs(v)
    return out


def _documents(path: Path) -> list[object]:
    if path.suffix not in (".json", ".jsonl", ".geojson"):
        return []
    text = path.read_text()
    return [json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl" else [json.loads(text)]


def test_published_session_folder_holds_no_private_data(tree: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """After a takedown, a zone request, an applied and a pending blur request, a config zone in a
    later nightly run and a raw deletion by place: no file of PUBLISH_DIR/<session>/ (what the
    GIS team gets) holds the position of a frame left out, a zone's polygon, a request's reason,
    a requester's reference, the boxes of a pending request or the point a deletion asked about."""
    from capture.geodesy import offset_m
    from capture.session import SessionReader
    from pipeline.config import NightlyConfig, load_config
    from pipeline.find import FindQuery, delete_raw, find_frames
    from pipeline.job import JobOptions, run_serial
    from pipeline.requests import ApplyOptions, RequestSpec, add_request, apply_requests

    pub, sdir, raw = tree
    sid = sdir.name
    pos = {r.frame_id: (r.lon, r.lat) for r in SessionReader(raw).frames()}

    def square(fid: str, half_m: float) -> dict:  # type: ignore[type-arg]
        lon, lat = pos[fid]
        s, w = offset_m(lat, lon, -half_m, -half_m)
        n, e = offset_m(lat, lon, half_m, half_m)
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}

    secrets = ["REASON-TAKEDOWN", "REASON-ZONE", "REASON-BLUR", "REASON-PENDING", "REASON-DELETE",
               "CASE-77", "CASE-78", "CASE-79", "DEL-9"]
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    add_request(sdir, RequestSpec("remove", "REASON-TAKEDOWN owner objected", session_id=sid, frame_id="000006",
                                  requester_ref="CASE-77"))
    add_request(sdir, RequestSpec("blur", "REASON-BLUR house name", session_id=sid, frame_id="000003",
                                  boxes=((400, 96, 592, 240),), requester_ref="CASE-78"))
    zone = square("000004", 1.5)
    add_request(pub, RequestSpec("zone", "REASON-ZONE shelter entrance", zone=zone, requester_ref="CASE-79"))
    assert not apply_requests(pub, ApplyOptions(config=cfg, sessions_root=raw.parent)).rejected
    pending_box = (112, 48, 304, 176)
    add_request(sdir, RequestSpec("blur", "REASON-PENDING window", session_id=sid, frame_id="000002",
                                  boxes=(pending_box,)))
    # A later nightly run with a config zone around 000005.
    cfg_zone = square("000005", 1.5)
    zfile = tmp_path / "zones.geojson"
    zfile.write_text(json.dumps({"type": "Feature", "properties": {"name": "school"}, "geometry": cfg_zone}))
    cfg2 = cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"exclusion_zones": zfile})})
    s = run_serial(JobOptions(sessions=(str(raw),), out=str(pub), config=cfg2, progress=False, threads=1))
    assert s.sessions[0].excluded == {"exclusion-zone": 2, "removed-by-request": 1}  # 000004, 000005; 000006
    # A raw deletion asked for around 000007 (its published image stays: not a takedown).
    near = (pos["000007"][1] + 2e-6, pos["000007"][0] + 2e-6)
    q = FindQuery(near=near, radius_m=2.0)
    found = find_frames(raw.parent, q, publish_dir=pub)
    assert [f.frame_id for f in found.frames if f.raw_present] == ["000007"]
    delete_raw(raw.parent, q, found.frames, reason="REASON-DELETE resident asked", requester_ref="DEL-9",
               publish_dir=pub)
    _verify_ok(pub)

    left_out = {f: pos[f] for f in ("000004", "000005", "000006")}
    assert not set(left_out) & set(_features(sdir))
    forbidden = [(p, f"frame {f}") for f, p in left_out.items()]
    forbidden += [((float(x), float(y)), "a zone vertex") for g in (zone, cfg_zone) for x, y in g["coordinates"][0]]
    forbidden.append(((near[1], near[0]), "the deletion's point"))
    files = [p for p in sorted(sdir.rglob("*")) if p.is_file()]
    assert any(p.name == "audit.jsonl" for p in files) and len(files) > 8
    for path in files:
        data = path.read_bytes()
        for word in secrets:
            assert word.encode() not in data, (path, word)
        for (lon, lat), what in forbidden:
            assert not (f"{lat:.6f}".encode() in data and f"{lon:.6f}".encode() in data), (path, what)
        for doc in _documents(path):
            for plon, plat in _coordinate_pairs(doc):
                for (lon, lat), what in forbidden:
                    assert abs(plon - lon) > 1e-6 or abs(plat - lat) > 1e-6, (path, what)
        assert b"[112,48,304,176]" not in data and b"112, 48, 304, 176" not in data, path  # the pending box
    # The governance folder keeps them (outside what the GIS team gets).
    gov = (pub / ".governance" / "requests.jsonl").read_text()
    assert "REASON-TAKEDOWN" in gov and "[112,48,304,176]" in gov
