"""Takedown and exclusion-zone requests, refused requests, and forged edits (see
test_requests.py for extra blur)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
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
