"""``streetveil audit verify``: check a publish tree (or one published session) end to end.

For each session: every link of ``audit.jsonl``; every file against ``manifest.json`` (sha256
and size; missing and unlisted files too); the manifest against the sha256 recorded by the
last ``publish`` record; every published image against the chain (some record must carry its
``output_sha256`` with status ok, so an image replaced together with its manifest entry is
still caught); frames.geojson against the images; the QA detections file the last ``publish``
record names (``PUBLISH_DIR/.qa/``: its sha256, and entries for published images only). For
the tree: every link of ``audit-index.jsonl``, and each session's latest index entry against
the session (its recorded chain head must still be in the chain, which catches a truncated
log, and its manifest must match). Problems are reported in that order; the first is the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import audit, qadata
from pipeline.manifest import MANIFEST, read_manifest, verify_manifest
from pipeline.publish import FRAMES_GEOJSON, IMAGES, published_sessions


@dataclass(frozen=True, slots=True)
class VerifyReport:
    root: str
    sessions: tuple[str, ...]
    records: int
    files: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def audited_outputs(records: list[dict[str, Any]]) -> set[str]:
    """sha256 of every output the chain accounts for (status ok, or no status)."""
    return {r["output_sha256"] for r in records
            if isinstance(r.get("output_sha256"), str) and r.get("status", "ok") == "ok"}


def verify_session(sdir: Path, label: str | None = None) -> tuple[list[str], int, int]:
    """(problems, records, files) for one published session folder."""
    sdir = Path(sdir)
    label = label or sdir.name
    problems: list[str] = []
    chain = audit.verify_chain(sdir / audit.AUDIT_FILE, name=f"{label}/{audit.AUDIT_FILE}")
    problems += chain.problems
    problems += verify_manifest(sdir, label)
    records = audit.read_records(sdir / audit.AUDIT_FILE)
    files = 0
    try:
        man_bytes = (sdir / MANIFEST).read_bytes()
        man = read_manifest(sdir)
    except (OSError, ValueError):
        return problems, chain.records, files
    files = len(man["files"])
    pubs = [r for r in records if r.get("type") == "publish"]
    man_sha = hashlib.sha256(man_bytes).hexdigest()
    if not pubs:
        problems.append(f"{label}/{audit.AUDIT_FILE}: no publish record (the chain does not cover this set)")
    elif pubs[-1].get("manifest_sha256") != man_sha:
        problems.append(f"{label}/{MANIFEST}: sha256 differs from the one in the last publish record "
                        f"(seq {pubs[-1].get('seq')}): manifest altered or replaced")
    problems += _check_qa(sdir, pubs, man)
    known = audited_outputs(records)
    images = sorted(r for r in man["files"] if r.startswith(f"{IMAGES}/"))
    for rel in images:
        if man["files"][rel].get("sha256") not in known:
            problems.append(f"{label}/{rel}: its sha256 is in no audit record "
                            "(image and manifest changed outside streetveil)")
    try:
        fc = json.loads((sdir / FRAMES_GEOJSON).read_bytes())
        feats = {f["properties"]["image"] for f in fc["features"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems.append(f"{label}/{FRAMES_GEOJSON}: unreadable: {e}")
    else:
        for rel in sorted(feats - set(images)):
            problems.append(f"{label}/{FRAMES_GEOJSON}: feature for {rel}, which is not published")
        for rel in sorted(set(images) - feats):
            problems.append(f"{label}/{rel}: published but has no feature in {FRAMES_GEOJSON}")
    return problems, chain.records, files


def _check_qa(sdir: Path, pubs: list[dict[str, Any]], man: dict[str, Any]) -> list[str]:
    """The QA detections the last publish record names (PUBLISH_DIR/.qa/, pipeline.qadata):
    present, unaltered (sha256), and only for the frames published, as published."""
    ref = qadata.named(pubs)
    if ref is None:
        return []
    root = sdir.parent
    entries, why = qadata.read(lambda rel: (root / rel).read_bytes(), ref)
    if entries is None:
        return [str(why)]
    images = {Path(rel).stem: str(e.get("sha256")) for rel, e in man["files"].items() if rel.startswith(f"{IMAGES}/")}
    return qadata.check(entries, images, str(ref.get("file")))


def _latest_index_entries(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        sid = r.get("session_id")
        if isinstance(sid, str) and r.get("type") in ("session-published", "session-appended", "session-withdrawn"):
            latest[sid] = r
    return latest


def verify_tree(path: Path) -> VerifyReport:
    """Verify a publish tree, or a single published session folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    if (path / MANIFEST).is_file():
        problems, n, files = verify_session(path)
        root, sessions = path.parent, [path.name]
        index_path = root / audit.INDEX_FILE
        if index_path.exists():
            problems += _check_index(root, sessions, only=path.name)
        return VerifyReport(str(path), tuple(sessions), n, files, tuple(problems))
    sessions = published_sessions(path)
    index_path = path / audit.INDEX_FILE
    if not sessions and not index_path.exists():
        if (path / audit.AUDIT_FILE).is_file():  # a sessions root's chain (`streetveil find --delete`)
            chain = audit.verify_chain(path / audit.AUDIT_FILE, name=f"{path.name}/{audit.AUDIT_FILE}")
            return VerifyReport(str(path), (), chain.records, 0, tuple(chain.problems))
        raise FileNotFoundError(f"{path}: not a publish folder (no {audit.INDEX_FILE}, no published session)")
    problems = []
    records = files = 0
    ichain = audit.verify_chain(index_path, name=audit.INDEX_FILE)
    problems += ichain.problems
    records += ichain.records
    for sid in sessions:
        p, n, f = verify_session(path / sid, sid)
        problems += p
        records += n
        files += f
    problems += _check_index(path, sessions, only=None)
    # The residents' requests queue (docs/governance.md).
    from pipeline.requests import verify_governance

    problems += verify_governance(path)
    return VerifyReport(str(path), tuple(sessions), records, files, tuple(problems))


def _check_index(root: Path, sessions: list[str], *, only: str | None) -> list[str]:
    problems: list[str] = []
    idx = root / audit.INDEX_FILE
    if only is not None:
        ichain = audit.verify_chain(idx, name=audit.INDEX_FILE)
        problems += ichain.problems
    latest = _latest_index_entries(audit.read_records(idx))
    for sid in sorted(set(latest) | set(sessions)):
        if only is not None and sid != only:
            continue
        entry = latest.get(sid)
        sdir = root / sid
        if entry is None:
            problems.append(f"{sid}: published but not recorded in {audit.INDEX_FILE}")
            continue
        if entry["type"] == "session-withdrawn":
            if sdir.exists():
                problems.append(f"{sid}: withdrawn in {audit.INDEX_FILE} (seq {entry.get('seq')}) but still published")
            continue
        if not (sdir / MANIFEST).is_file():
            problems.append(f"{sid}: recorded in {audit.INDEX_FILE} (seq {entry.get('seq')}) but missing")
            continue
        head = entry.get("audit_head")
        if not isinstance(head, str) or not audit.contains_head(sdir / audit.AUDIT_FILE, head):
            problems.append(f"{sid}/{audit.AUDIT_FILE}: the record the index holds as its head "
                            f"(seq {entry.get('audit_seq')}) is gone: log truncated or replaced")
        man_sha = hashlib.sha256((sdir / MANIFEST).read_bytes()).hexdigest()
        if entry.get("manifest_sha256") != man_sha:
            problems.append(f"{sid}/{MANIFEST}: differs from the manifest recorded in {audit.INDEX_FILE} "
                            f"(seq {entry.get('seq')})")
    return problems
