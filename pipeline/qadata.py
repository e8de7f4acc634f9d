"""Durable detection data for QA: ``PUBLISH_DIR/.qa/<session>/detections-<sha256[:16]>.jsonl``.

The audit chain holds counts only, and the job's per-frame results in ``.work/`` are a cache
that may be deleted; the QA sheet (``pipeline.review``) needs the boxes and scores. So every
publication (``pipeline.publish.PublishTxn.commit``) also writes this sidecar: one JSON line
per *published* frame, in capture order::

    {"v": 1, "frame_id": "000001", "image_sha256": "…", "width": 1280, "height": 720,
     "detect_key": "…", "detections": [{"class": "face", "box": [x1, y1, x2, y2],
                                        "score": 0.93, "carried": false}, …]}

Boxes are in input pixels: the detector's own boxes as found, and the boxes carried from
neighbouring frames (``carried``: true) as grown by the carry step; request boxes are in the
audit chain's ``frame-override`` records. With a plate verifier on (``plate_verify``), an
entry also lists under ``"vetoed"`` (``[{"class", "box", "score"}, …]``, possibly empty) the
candidates the verifier vetoed that the detector alone would have redacted: not blurred in
the image, listed so that a reviewer can judge the verifier. Absent without a verifier (and
in entries written before streetveil kept them). A detection an unblur request left out of the
image is marked ``"unblurred": true``: not blurred, but still one of the frame's detections,
in the detector's order (its carry context once the raw frame is gone). No pixels, crops or
plate text. ``detect_key`` (a
hash of the raw frame's sha256, the redaction config and the model) lets the nightly job reuse
a frame's own boxes as carry context after its raw file was deleted.

Why here: outside every published session folder, because the GIS team receives those folders
(they are for QA, not for them); in a dot folder next to ``.work`` and ``.governance``, which
the publish tree's readers skip. Unlike ``.work`` it is not a cache: the last ``publish``
record of the session's audit chain names the file and its sha256, and ``audit verify`` checks
it. The name carries the content hash, so a new version never overwrites the one the chain
still names: a crash before the new publication is swapped in leaves the old pair intact; the
next commit removes files no record names any more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

QA_DIR = ".qa"
CLASS_NAMES = ("face", "plate")
FORMAT_VERSION = 1
RECORD_KEY = "qa_detections"  # in the session's ``publish`` records


def entry(frame_id: str, *, image_sha256: str, width: int | None, height: int | None, detect_key: str,
          boxes: Sequence[Sequence[float]], vetoed: Sequence[Sequence[float]] | None = None,
          unblurred: Collection[int] = ()) -> dict[str, Any]:
    """One frame's line. ``boxes`` are ``(x1, y1, x2, y2, class index, score, carried 0/1)``,
    ``unblurred`` indices into them (left out by unblur requests); ``vetoed`` (``(x1, y1, x2,
    y2, class index, score)``, not redacted) only when recorded."""
    def item(b: Sequence[float]) -> dict[str, Any]:
        return {"class": CLASS_NAMES[int(b[4])], "box": [float(v) for v in b[:4]], "score": float(b[5])}

    e = {"v": FORMAT_VERSION, "frame_id": frame_id, "image_sha256": image_sha256, "width": width,
         "height": height, "detect_key": detect_key,
         "detections": [{**item(b), "carried": bool(b[6]), **({"unblurred": True} if i in unblurred else {})}
                        for i, b in enumerate(boxes)]}
    if vetoed is not None:
        e["vetoed"] = [item(b) for b in vetoed]
    return e


def encode(entries: Iterable[Mapping[str, Any]], order: Sequence[str]) -> bytes:
    """The file's bytes: one canonical JSON line per entry, in the order of ``order`` (frame ids)."""
    by_id = {str(e["frame_id"]): e for e in entries}
    return b"".join(json.dumps(by_id[f], sort_keys=True, separators=(",", ":"), allow_nan=False).encode() + b"\n"
                    for f in order if f in by_id)


def decode(data: bytes) -> dict[str, dict[str, Any]]:
    """Frame id -> entry; ValueError when a line is not an entry."""
    out: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        d = json.loads(line)
        if not isinstance(d, dict) or not isinstance(d.get("frame_id"), str) \
                or not isinstance(d.get("detections"), list):
            raise ValueError(f"line {i} is not a QA detections entry")
        out[d["frame_id"]] = d
    return out


def file_rel(session_id: str, sha256: str) -> str:
    """Where the sidecar with content hash ``sha256`` lives, relative to PUBLISH_DIR."""
    return f"{QA_DIR}/{session_id}/detections-{sha256[:16]}.jsonl"


def named(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What the session's last ``publish`` record says about its sidecar (file, sha256,
    frames), or None when it names none (publications from before the sidecar existed)."""
    pubs = [r for r in records if r.get("type") == "publish"]
    ref = pubs[-1].get(RECORD_KEY) if pubs else None
    return dict(ref) if isinstance(ref, dict) else None


def read(data_of: Any, ref: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """(entries, None) of the sidecar ``ref`` names, read with ``data_of(rel) -> bytes``; or
    (None, what is wrong) when it is missing, altered or unreadable."""
    rel = str(ref.get("file"))
    try:
        data = data_of(rel)
    except (FileNotFoundError, OSError):
        return None, f"{rel}: missing (the QA detections the last publish record names; .qa/ is not a cache)"
    if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        return None, f"{rel}: sha256 differs from the last publish record (QA detections altered)"
    try:
        return decode(data), None
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"{rel}: unreadable: {e}"


def own_detections(e: Mapping[str, Any]) -> tuple[list[list[float]], list[float], list[int]]:
    """The frame's own (not carried) detections: (xyxy, scores, class indices), those an
    unblur request left out of the image included (the detector found them)."""
    own = [d for d in e["detections"] if not d.get("carried")]
    return ([[float(v) for v in d["box"]] for d in own], [float(d["score"]) for d in own],
            [CLASS_NAMES.index(d["class"]) for d in own])


def check(entries: Mapping[str, Mapping[str, Any]], images: Mapping[str, str], rel: str) -> list[str]:
    """Problems of sidecar ``entries`` against the published images (frame id -> sha256):
    an entry for a frame that is not published, or for other image bytes than published."""
    problems = []
    for fid, e in sorted(entries.items()):
        if fid not in images:
            problems.append(f"{rel}: frame {fid} is not published (QA detections are kept for published "
                            "frames only)")
        elif e.get("image_sha256") != images[fid]:
            problems.append(f"{rel}: frame {fid}: entry is for other image bytes than the published image")
    return problems
