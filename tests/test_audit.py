"""The audit hash chain: append, verify, and every kind of tampering is named."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from pipeline import audit
from pipeline.errors import AuditMismatch


def _chain(tmp_path: Path, n: int = 5) -> Path:
    p = tmp_path / "audit.jsonl"
    audit.append_records(p, [{"type": "run", "run_id": "r1"}])
    audit.append_records(p, [{"type": "frame", "frame_id": f"{i:06d}", "faces": i} for i in range(1, n)])
    return p


def test_links_and_seq(tmp_path: Path) -> None:
    p = _chain(tmp_path)
    lines = p.read_bytes().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["seq"] for r in recs] == list(range(5))
    assert recs[0]["prev"] == audit.GENESIS
    for prev, rec in zip(lines, recs[1:], strict=False):
        assert rec["prev"] == audit.line_hash(prev)
    rep = audit.verify_chain(p)
    assert rep.ok and rep.records == 5 and rep.head == audit.line_hash(lines[-1])
    assert audit.read_state(p) == audit.ChainState(5, rep.head)


def test_link_is_pure_and_rejects_reserved_keys() -> None:
    lines, st = audit.link([{"type": "a"}, {"type": "b"}], audit.ChainState(0, audit.GENESIS))
    again, st2 = audit.link([{"type": "a"}, {"type": "b"}], audit.ChainState(0, audit.GENESIS))
    assert lines == again and st == st2
    with pytest.raises(ValueError, match="seq"):
        audit.link([{"type": "a", "seq": 3}], st)
    with pytest.raises(ValueError, match="type"):
        audit.link([{"what": "no type"}], st)


def _rewrite(p: Path, fn) -> None:  # type: ignore[no-untyped-def]
    lines = p.read_bytes().splitlines()
    p.write_bytes(b"".join(x + b"\n" for x in fn(lines)))


def _edit_faces(lines: list[bytes]) -> list[bytes]:
    rec = json.loads(lines[2])
    rec["faces"] = 0  # hide a detection, keep canonical form
    lines[2] = audit.canonical(rec)
    return lines


@pytest.mark.parametrize(
    ("tamper", "line", "what"),
    [
        (_edit_faces, 4, "'prev' does not match"),
        (lambda ls: ls[:2] + ls[3:], 3, "'prev' does not match"),  # a record removed
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, "'prev' does not match"),  # reordered
        (lambda ls: [*ls[:3], b'{"type":"frame","faces":"x"', *ls[3:]], 4, "not a JSON object"),
        (lambda ls: [*ls[:1], ls[1].replace(b'"faces":1', b'"faces": 1'), *ls[2:]], 2, "canonical"),
    ],
    ids=["edited", "removed", "reordered", "garbage-inserted", "reformatted"],
)
def test_tampering_names_the_first_broken_line(tmp_path: Path, tamper, line: int, what: str) -> None:  # type: ignore[no-untyped-def]
    p = _chain(tmp_path)
    _rewrite(p, tamper)
    rep = audit.verify_chain(p, name="S/audit.jsonl")
    assert not rep.ok
    assert rep.problems[0].startswith(f"S/audit.jsonl line {line}:"), rep.problems
    assert what in rep.problems[0]


def test_torn_tail_is_reported_and_blocks_appends(tmp_path: Path) -> None:
    p = _chain(tmp_path)
    with open(p, "ab") as f:
        f.write(b'{"type":"fra')
    rep = audit.verify_chain(p)
    assert any("torn" in x for x in rep.problems)
    with pytest.raises(AuditMismatch, match="last record is not a valid audit record"):
        audit.append_records(p, [{"type": "x"}])


def test_missing_file(tmp_path: Path) -> None:
    rep = audit.verify_chain(tmp_path / "nope.jsonl", name="nope")
    assert rep.problems == ("nope: missing",)
    assert audit.read_state(tmp_path / "nope.jsonl") == audit.ChainState(0, audit.GENESIS)


def test_contains_head(tmp_path: Path) -> None:
    p = _chain(tmp_path)
    head = audit.verify_chain(p).head
    assert audit.contains_head(p, head)
    _rewrite(p, lambda ls: ls[:-1])  # truncation: the chain alone is still valid ...
    assert audit.verify_chain(p).ok
    assert not audit.contains_head(p, head)  # ... but the old head is gone (the index catches it)


def _appender(path: str, who: int, n: int) -> None:
    for i in range(n):
        audit.append_records(Path(path), [{"type": "note", "who": who, "i": i}])


def test_concurrent_appenders_keep_one_chain(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_appender, args=(str(p), w, 25)) for w in range(3)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    rep = audit.verify_chain(p)
    assert rep.ok, rep.problems
    assert rep.records == 75
