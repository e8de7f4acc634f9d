"""The publish tree the GIS team reads, and the one way to change it: ``PublishTxn``.

Layout (docs/publish-format.md)::

    PUBLISH_DIR/audit-index.jsonl          hash chain across runs: every (re)publication
    PUBLISH_DIR/<session-id>/images/<frame-id>.jpg
                             frames.geojson, track.geojson, notice.html, notice.txt
                             manifest.json  sha256 + size of every file above
                             audit.jsonl    the session's hash chain (all runs and edits)
    PUBLISH_DIR/.work/       per-frame results of the job (cache; safe to delete)
    PUBLISH_DIR/.qa/<session-id>/detections-<sha>.jsonl
                             boxes and scores of the published frames for QA (pipeline.qadata;
                             not published, not a cache: named with its sha256 by the chain)
    PUBLISH_DIR/.staging/    sessions being built; PUBLISH_DIR/.locks/ one lock per session

A transaction builds the complete new version of a session in ``.staging/`` (the images are
hard links, so nothing is copied twice), writes frames.geojson, the manifest and the audit
records, and then swaps it with the published folder in one ``renameat2(RENAME_EXCHANGE)``
call (Linux >= 3.15 on local filesystems): a reader sees the old version or the new one,
never a mix. Where the exchange is not supported it falls back to two renames, leaving a
moment in which the session folder is absent, but never half-written. Each commit then
appends a record to the index. The nightly job and the governance commands (takedown, extra
blur) both publish through this class; it holds a per-session lock for its whole life.

Remote stores (fsspec URLs) cannot rename folders: the new version is uploaded file by file,
``manifest.json`` last, and files no longer listed are removed afterwards. Readers of a remote
tree must go by the manifest.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.fsutil import atomic_write_bytes, fsync_dir
from pipeline import audit, qadata
from pipeline.errors import PipelineError
from pipeline.geojson import dumps, feature_collection
from pipeline.manifest import MANIFEST, build_manifest, sha256_file
from pipeline.store import Store

log = logging.getLogger(__name__)

IMAGES = "images"
FRAMES_GEOJSON = "frames.geojson"
TRACK_GEOJSON = "track.geojson"
WORK_DIR = ".work"
STAGING_DIR = ".staging"
LOCK_DIR = ".locks"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PublishError(PipelineError):
    """The publish tree cannot be written (permissions, disk, a bad name)."""


def check_name(name: str, what: str) -> str:
    if not _SAFE.match(name):
        raise PublishError(f"{what} {name!r} is not a safe file name")
    return name


def image_path(frame_id: str) -> str:
    return f"{IMAGES}/{check_name(frame_id, 'frame id')}.jpg"


# ---------------------------------------------------------------------------- folder swap

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
        return False
    raise OSError(err, f"renameat2({a}, {b}): {os.strerror(err)}")


def swap_into_place(staging: Path, final: Path) -> None:
    """Make ``staging`` the folder at ``final`` (replacing any old one) and delete the old."""
    if not final.exists():
        os.rename(staging, final)
    elif _exchange(staging, final):
        shutil.rmtree(staging)  # now holds the old version
    else:
        old = staging.with_name(staging.name + ".old")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old)
    fsync_dir(final.parent)
    fsync_dir(staging.parent)


# ---------------------------------------------------------------------------- transaction


@dataclass(frozen=True, slots=True)
class Committed:
    session_id: str
    manifest_sha256: str
    audit_head: str
    audit_seq: int
    images: int


@contextlib.contextmanager
def publish_lock(publish_dir: Path, name: str) -> Iterator[None]:
    """Hold ``PUBLISH_DIR/.locks/<name>.lock`` exclusively for the block: one writer per
    session (or of the governance queue) at a time on this machine."""
    d = Path(publish_dir) / LOCK_DIR
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        # Unlock explicitly: a copy of the descriptor in a process forked meanwhile would
        # otherwise keep the lock held after our close.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class PublishTxn:
    """One new version of one published session. Use ``PublishTxn.open`` as a context
    manager; nothing is visible to readers until ``commit``; leaving the block without a
    commit (or with an exception) discards the staging folder."""

    def __init__(self, out: Store, session_id: str, staging: Path) -> None:
        self.out = out
        self.session_id = session_id
        self.staging = staging
        self._known: dict[str, tuple[str, int]] = {}
        self.features: dict[str, dict[str, Any]] = {}
        # QA detections of the frames (pipeline.qadata); None: this version keeps none (an edit
        # of a publication from before they were kept, or whose file is gone).
        self.qa: dict[str, dict[str, Any]] | None = {}
        self._published_frames: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]] | None] | None = None
        self.committed: Committed | None = None

    # -- life cycle

    @classmethod
    @contextlib.contextmanager
    def open(cls, out: Store, session_id: str, *, keep_published: bool = False) -> Iterator[PublishTxn]:
        """Start a transaction. The staging folder starts with the published session's
        ``audit.jsonl`` (the chain continues); with ``keep_published`` also with all its other
        files and its frames.geojson features, for edits (takedown, extra blur)."""
        check_name(session_id, "session id")
        local = out.local
        with contextlib.ExitStack() as held:
            if local is not None:
                held.enter_context(publish_lock(local, session_id))
                sdir = local / STAGING_DIR
                sdir.mkdir(parents=True, exist_ok=True)
                # Under the lock no one else is building this session: leftovers are from a
                # killed process.
                for stale in sdir.glob(f"{session_id}.*"):
                    shutil.rmtree(stale, ignore_errors=True)
                staging = sdir / f"{session_id}.{uuid.uuid4().hex[:12]}"
                staging.mkdir()
            else:
                staging = Path(tempfile.mkdtemp(prefix=f"streetveil-publish-{session_id}-"))
            txn = cls(out, session_id, staging)
            try:
                txn._seed(keep_published)
                yield txn
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)

    def _published(self) -> Path | None:
        local = self.out.local
        return None if local is None else local / self.session_id

    def _seed(self, keep_published: bool) -> None:
        sid = self.session_id
        pub = self._published()
        if pub is not None:
            if (pub / audit.AUDIT_FILE).exists():
                shutil.copyfile(pub / audit.AUDIT_FILE, self.staging / audit.AUDIT_FILE)
            if keep_published and pub.is_dir():
                for p in sorted(pub.rglob("*")):
                    rel = p.relative_to(pub).as_posix()
                    if p.is_dir() or rel in (audit.AUDIT_FILE, MANIFEST):
                        continue
                    (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.link(p, self.staging / rel)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.staging / audit.AUDIT_FILE).write_bytes(self.out.read_bytes(f"{sid}/{audit.AUDIT_FILE}"))
            if keep_published:
                with contextlib.suppress(FileNotFoundError):
                    doc = json.loads(self.out.read_bytes(f"{sid}/{MANIFEST}"))
                    for rel in doc["files"]:
                        (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
                        (self.staging / rel).write_bytes(self.out.read_bytes(f"{sid}/{rel}"))
        if keep_published and (self.staging / FRAMES_GEOJSON).exists():
            fc = json.loads((self.staging / FRAMES_GEOJSON).read_bytes())
            self.features = {f["properties"]["frame_id"]: f for f in fc["features"]}
        if keep_published:
            ref = qadata.named(self.records())
            self.qa, why = qadata.read(self.out.read_bytes, ref) if ref else (None, None)
            if why:
                log.warning("%s: %s; this version keeps no QA detections", sid, why)

    # -- reading the state this transaction starts from

    def records(self) -> list[dict[str, Any]]:
        """The session's audit records so far (as staged; unverified)."""
        return audit.read_records(self.staging / audit.AUDIT_FILE)

    # -- edits (all writes replace files, never modify them in place: staged images may be
    #    hard links to the published ones)

    def write_file(self, rel: str, data: bytes) -> None:
        if rel in (MANIFEST, audit.AUDIT_FILE, FRAMES_GEOJSON):
            raise PublishError(f"{rel} is written by commit()")
        target = self.staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        atomic_write_bytes(target, data, durable=False)
        self._known[rel] = (hashlib.sha256(data).hexdigest(), len(data))

    def put_image(self, frame_id: str, feature: Mapping[str, Any], *, data: bytes | None = None,
                  source: Path | None = None, sha256: str | None = None,
                  qa: Mapping[str, Any] | None = None) -> None:
        """Stage ``images/<frame_id>.jpg`` (from bytes, or a hard link to a local file) and its
        GeoJSON feature. With ``sha256`` the staged file must hash to it, else PublishError
        (a work file damaged after it was written is never published). ``qa``: the frame's QA
        detections entry (``pipeline.qadata.entry``); without it an entry the frame had is kept
        (its boxes still hold for an image edited only inside a request box)."""
        rel = image_path(frame_id)
        target = self.staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        if data is not None:
            atomic_write_bytes(target, data, durable=False)
        elif source is not None:
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        else:
            raise ValueError("put_image needs data or source")
        got, size = sha256_file(target)
        if sha256 is not None and got != sha256:
            target.unlink()
            raise PublishError(f"{frame_id}: work image hashes to {got[:12]}, expected {sha256[:12]}")
        self._known[rel] = (got, size)
        self.features[frame_id] = dict(feature)
        if self.qa is not None:
            base = qa if qa is not None else self.qa.get(frame_id)
            if base is not None:
                self.qa[frame_id] = {**base, "image_sha256": got}

    def keep_from_published(self, frame_id: str) -> bool:
        """Carry a frame over from the published version unchanged: its image, its feature and
        its QA detections (for frames that can no longer be rendered: raw deleted on purpose).
        False when the published version does not have it."""
        if self._published_frames is None:
            self._published_frames = self._read_published()
        feats, qa = self._published_frames
        feat = feats.get(frame_id)
        if feat is None:
            return False
        rel = image_path(frame_id)
        pub = self._published()
        try:
            if pub is not None:
                self.put_image(frame_id, feat, source=pub / rel, sha256=feat["properties"].get("sha256"),
                               qa=(qa or {}).get(frame_id))
            else:
                self.put_image(frame_id, feat, data=self.out.read_bytes(f"{self.session_id}/{rel}"),
                               sha256=feat["properties"].get("sha256"), qa=(qa or {}).get(frame_id))
        except (FileNotFoundError, PublishError) as e:
            log.warning("%s: cannot keep published frame %s: %s", self.session_id, frame_id, e)
            return False
        return True

    def _read_published(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]] | None]:
        try:
            fc = json.loads(self.out.read_bytes(f"{self.session_id}/{FRAMES_GEOJSON}"))
        except FileNotFoundError:
            return {}, None
        feats = {f["properties"]["frame_id"]: f for f in fc["features"]}
        ref = qadata.named(self.records())
        qa = qadata.read(self.out.read_bytes, ref)[0] if ref else None
        return feats, qa

    def remove_frame(self, frame_id: str) -> bool:
        """Drop a frame's image, feature and QA detections; True if it was there."""
        rel = image_path(frame_id)
        had = frame_id in self.features or (self.staging / rel).exists()
        with contextlib.suppress(FileNotFoundError):
            (self.staging / rel).unlink()
        self._known.pop(rel, None)
        self.features.pop(frame_id, None)
        if self.qa is not None:
            self.qa.pop(frame_id, None)
        return had

    def image_ids(self) -> list[str]:
        return sorted(self.features)

    # -- commit

    def commit(self, records: Sequence[Mapping[str, Any]], publish: Mapping[str, Any] | None = None,
               *, index: Mapping[str, Any] | None = None) -> Committed:
        """Write frames.geojson and the manifest, append ``records`` plus a closing
        ``publish`` record (with the manifest's sha256) to the session's chain, swap the new
        version in, and append a ``session-published`` record to the index."""
        if self.committed is not None:
            raise PublishError("transaction already committed")
        st = self.staging
        atomic_write_bytes(st / FRAMES_GEOJSON, dumps(feature_collection(self.features.values())), durable=False)
        man = build_manifest(st, self.session_id, known=self._known)
        atomic_write_bytes(st / MANIFEST, man, durable=False)
        man_sha = hashlib.sha256(man).hexdigest()
        files = json.loads(man)["files"]
        closing = {"type": "publish", "time": audit.now_utc(), "session_id": self.session_id,
                   "manifest_sha256": man_sha, "files": len(files), "images": len(self.features),
                   qadata.RECORD_KEY: self._write_qa(), **(publish or {})}
        for p in st.rglob("*"):  # durability before the swap makes it visible
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        state = audit.append_records(st / audit.AUDIT_FILE, [*records, closing])
        local = self.out.local
        if local is not None:
            swap_into_place(st, local / self.session_id)
        else:
            self._upload(files)
        self._prune_qa(closing[qadata.RECORD_KEY])
        index_rec = {"type": "session-published", "time": audit.now_utc(), "session_id": self.session_id,
                     "audit_head": state.head, "audit_seq": state.seq - 1, "manifest_sha256": man_sha,
                     "images": len(self.features), **(index or {})}
        append_index(self.out, [index_rec])
        self.committed = Committed(self.session_id, man_sha, state.head, state.seq - 1, len(self.features))
        log.info("published %s: %d images", self.session_id, len(self.features))
        return self.committed

    def _write_qa(self) -> dict[str, Any] | None:
        """Write the QA detections of the published frames (before the chain names them) and
        return what the publish record says about them."""
        if self.qa is None:
            return None
        order = [f["properties"]["frame_id"] for f in feature_collection(self.features.values())["features"]]
        data = qadata.encode((e for fid, e in self.qa.items() if fid in self.features), order)
        sha = hashlib.sha256(data).hexdigest()
        rel = qadata.file_rel(self.session_id, sha)
        self.out.write_bytes(rel, data)
        return {"file": rel, "sha256": sha, "frames": data.count(b"\n")}

    def _prune_qa(self, ref: Mapping[str, Any] | None) -> None:
        """Remove the session's QA files the new publish record does not name (old versions,
        leftovers of a crash): they may hold boxes of frames no longer published."""
        keep = Path(str(ref["file"])).name if ref else None
        folder = f"{qadata.QA_DIR}/{self.session_id}"
        for name in self.out.listdir(folder):
            if name != keep:
                self.out.remove(f"{folder}/{name}")

    def _upload(self, files: Mapping[str, Any]) -> None:
        sid = self.session_id
        old: set[str] = set()
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            old = set(json.loads(self.out.read_bytes(f"{sid}/{MANIFEST}"))["files"])
        for rel in sorted(files):
            self.out.write_bytes(f"{sid}/{rel}", (self.staging / rel).read_bytes())
        self.out.write_bytes(f"{sid}/{audit.AUDIT_FILE}", (self.staging / audit.AUDIT_FILE).read_bytes())
        self.out.write_bytes(f"{sid}/{MANIFEST}", (self.staging / MANIFEST).read_bytes())
        for rel in sorted(old - set(files)):
            self.out.remove(f"{sid}/{rel}")


# ---------------------------------------------------------------------------- index + appends


def append_index(out: Store, records: Sequence[Mapping[str, Any]]) -> audit.ChainState:
    """Append to PUBLISH_DIR/audit-index.jsonl (remote stores: read, append, rewrite)."""
    local = out.local
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        return audit.append_records(local / audit.INDEX_FILE, records)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / audit.INDEX_FILE
        with contextlib.suppress(FileNotFoundError):
            tmp.write_bytes(out.read_bytes(audit.INDEX_FILE))
        state = audit.append_records(tmp, records)
        out.write_bytes(audit.INDEX_FILE, tmp.read_bytes())
        return state


def append_session_records(publish_dir: Path, session_id: str, records: Sequence[Mapping[str, Any]]) -> audit.ChainState:
    """Append records to a published session's chain in place (no new version of its files:
    purge, notes) and record the new head in the index. Local publish trees only."""
    check_name(session_id, "session id")
    publish_dir = Path(publish_dir)
    sdir = publish_dir / session_id
    if not (sdir / MANIFEST).exists():
        raise PublishError(f"{sdir}: no published session there")
    with publish_lock(publish_dir, session_id):
        state = audit.append_records(sdir / audit.AUDIT_FILE, records)
        man_sha, _ = sha256_file(sdir / MANIFEST)
        append_index(Store(str(publish_dir)), [{
            "type": "session-appended", "time": audit.now_utc(), "session_id": session_id,
            "audit_head": state.head, "audit_seq": state.seq - 1, "manifest_sha256": man_sha,
            "records": [r.get("type") for r in records]}])
        return state


def published_sessions(publish_dir: Path) -> list[str]:
    """Session folders in a local publish tree (those with a manifest)."""
    d = Path(publish_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())
