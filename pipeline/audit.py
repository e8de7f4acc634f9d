"""Tamper-evident audit logs: JSON Lines where every record carries the sha256 of the record
before it (a hash chain).

One record is one line of canonical JSON (keys sorted, no spaces, UTF-8). Every record has
``seq`` (0, 1, 2, ...), ``prev`` (sha256 hex of the previous line's exact bytes; 64 zeros for the
first) and ``type``. Editing, inserting or deleting a line breaks the link of the line after it;
deleting lines at the end is caught by the publish index, which records each session log's head.

This module is the one API for appending and verifying (the nightly job, ``purge`` and the
governance commands all write through ``append_records``). It holds no personal data rules of
its own: callers must only pass counts, hashes, ids and times, never pixels or plate text.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capture.fsutil import fsync_dir
from capture.types import format_time

GENESIS = "0" * 64
AUDIT_FILE = "audit.jsonl"
INDEX_FILE = "audit-index.jsonl"
RECORD_VERSION = 1


def canonical(record: Mapping[str, Any]) -> bytes:
    """The exact bytes of a record's line (without the newline)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def now_utc() -> str:
    return format_time(datetime.now(UTC))


def who() -> dict[str, Any]:
    """Who and where: the OS user and host running the command (no other personal data)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid:{os.getuid()}"
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where a chain ends: the next ``seq`` and the hash the next record must carry."""

    seq: int
    head: str

    def __post_init__(self) -> None:
        if self.seq < 0 or len(self.head) != 64:
            raise ValueError("invalid chain state")


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of verifying one chain. ``problems`` are in file order; the first is the first
    broken link."""

    path: str
    records: int
    head: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def link(records: Sequence[Mapping[str, Any]], state: ChainState) -> tuple[list[bytes], ChainState]:
    """Chain ``records`` after ``state``: returns their lines and the new state (pure)."""
    lines: list[bytes] = []
    seq, head = state.seq, state.head
    for r in records:
        if "seq" in r or "prev" in r:
            raise ValueError("records must not set 'seq' or 'prev' themselves")
        if not isinstance(r.get("type"), str):
            raise ValueError("every audit record needs a string 'type'")
        full = {"v": RECORD_VERSION, **r, "seq": seq, "prev": head}
        line = canonical(full)
        lines.append(line)
        head = line_hash(line)
        seq += 1
    return lines, ChainState(seq, head)


def _last_line(f: Any) -> bytes | None:
    """The last complete line of an open binary file, reading backwards from the end."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    if end == 0:
        return None
    pos, chunk, buf = end, 65536, b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        body = buf[:-1] if buf.endswith(b"\n") else buf
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1:]
    return buf[:-1] if buf.endswith(b"\n") else buf


def state_of_tail(last: bytes | None, path: Path) -> ChainState:
    if last is None:
        return ChainState(0, GENESIS)
    try:
        rec = json.loads(last)
        seq = int(rec["seq"]) + 1
    except (ValueError, KeyError, TypeError) as e:
        from pipeline.errors import AuditMismatch

        raise AuditMismatch(f"{path}: last record is not a valid audit record ({e}); "
                            "run `streetveil audit verify` and repair before appending") from None
    return ChainState(seq, line_hash(last))


def read_state(path: Path) -> ChainState:
    """The chain state at the end of ``path`` (genesis when the file is missing or empty)."""
    try:
        with open(path, "rb") as f:
            return state_of_tail(_last_line(f), path)
    except FileNotFoundError:
        return ChainState(0, GENESIS)


def append_records(path: Path, records: Sequence[Mapping[str, Any]]) -> ChainState:
    """Append ``records`` to the chain in ``path`` (created if missing); returns the new head.

    Safe against concurrent appenders on one machine (an exclusive ``flock`` spans reading the
    tail and writing), and durable (fsync) before it returns. The lines are written with one
    ``write`` so a crash leaves at most one torn last line, which ``verify_chain`` reports.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "r+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            state = state_of_tail(_last_line(f), path)
            lines, new_state = link(records, state)
            f.seek(0, os.SEEK_END)
            f.write(b"".join(line + b"\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    if created:
        fsync_dir(path.parent)
    return new_state


def iter_records(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    """(line number, raw line, parsed record or None) for every non-empty line."""
    with open(path, "rb") as f:
        data = f.read()
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            obj = None
        yield i, raw, obj if isinstance(obj, dict) else None


def read_records(path: Path) -> list[dict[str, Any]]:
    """All parsed records of a chain (unverified; call ``verify_chain`` when it matters)."""
    try:
        return [r for _, _, r in iter_records(path) if r is not None]
    except FileNotFoundError:
        return []


def latest_frame_records(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last ``frame`` record of every frame id in a session's chain: its current state."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "frame" and isinstance(r.get("frame_id"), str):
            out[r["frame_id"]] = dict(r)
    return out


def verify_chain(path: Path, *, name: str | None = None) -> ChainReport:
    """Check every link of the chain in ``path``; never raises for bad content."""
    path = Path(path)
    label = name or str(path)
    problems: list[str] = []
    prev, expect_seq, n = GENESIS, 0, 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ChainReport(label, 0, GENESIS, (f"{label}: missing",))
    if data and not data.endswith(b"\n"):
        problems.append(f"{label}: last line is torn (no newline): an append was interrupted")
    for i, raw, rec in iter_records(path):
        n += 1
        where = f"{label} line {i}"
        if rec is None:
            problems.append(f"{where}: not a JSON object (record altered)")
        else:
            if rec.get("prev") != prev:
                problems.append(f"{where}: 'prev' does not match the sha256 of the record before it "
                                "(this record or the one before was altered, inserted or removed)")
            if rec.get("seq") != expect_seq:
                problems.append(f"{where}: seq {rec.get('seq')!r}, expected {expect_seq} "
                                "(records removed or reordered)")
            if raw != canonical(rec):
                problems.append(f"{where}: not in canonical form (record edited by hand)")
            expect_seq = (rec["seq"] + 1) if isinstance(rec.get("seq"), int) else expect_seq + 1
        prev = line_hash(raw)
    return ChainReport(label, n, prev, tuple(problems))


def contains_head(path: Path, head: str) -> bool:
    """True when some record of the chain in ``path`` hashes to ``head``."""
    with contextlib.suppress(FileNotFoundError):
        return any(line_hash(raw) == head for _, raw, _ in iter_records(path))
    return False
