"""``manifest.json``: the sha256 and size of every published file of a session.

Everything in a published session folder is listed except ``manifest.json`` itself and
``audit.jsonl`` (append-only; protected by its own hash chain, whose records carry the
manifest's sha256). The manifest holds no times or run ids, so publishing the same content
twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.audit import AUDIT_FILE

MANIFEST = "manifest.json"
FORMAT = "streetveil-publish"
FORMAT_VERSION = 1
UNLISTED = frozenset({MANIFEST, AUDIT_FILE})


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def published_files(root: Path) -> list[str]:
    """Relative POSIX paths of every file below ``root`` that the manifest must list."""
    out = []
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel in UNLISTED or p.is_dir():
            continue
        out.append(rel)
    return out


def build_manifest(root: Path, session_id: str, *, known: dict[str, tuple[str, int]] | None = None) -> bytes:
    """The manifest of the folder ``root``. ``known`` maps paths to (sha256, size) already
    computed; every other file is hashed here."""
    known = known or {}
    files: dict[str, Any] = {}
    for rel in published_files(root):
        sha, size = known.get(rel) or sha256_file(Path(root) / rel)
        files[rel] = {"sha256": sha, "size": size}
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "session_id": session_id, "files": files}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def read_manifest(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((Path(root) / MANIFEST).read_bytes())
    if doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        raise ValueError("not a streetveil publish manifest")
    return doc


def verify_manifest(root: Path, label: str) -> list[str]:
    """Problems with ``root`` against its manifest, in path order; empty when all match."""
    root = Path(root)
    try:
        doc = read_manifest(root)
    except FileNotFoundError:
        return [f"{label}/{MANIFEST}: missing"]
    except (ValueError, OSError) as e:
        return [f"{label}/{MANIFEST}: unreadable: {e}"]
    problems = []
    listed: dict[str, Any] = doc["files"]
    present = set(published_files(root))
    for rel in sorted(set(listed) | present):
        where = f"{label}/{rel}"
        if rel not in present:
            problems.append(f"{where}: listed in the manifest but missing")
            continue
        if rel not in listed:
            problems.append(f"{where}: not listed in the manifest (unexpected file)")
            continue
        sha, size = sha256_file(root / rel)
        entry = listed[rel]
        if size != entry.get("size"):
            problems.append(f"{where}: size {size} differs from the manifest ({entry.get('size')})")
        elif sha != entry.get("sha256"):
            problems.append(f"{where}: sha256 differs from the manifest (file altered)")
    return problems
