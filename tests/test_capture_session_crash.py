"""Crash windows in the session writer found by the kill -9 test, pinned down one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.session import SessionMeta, SessionWriter, check_session, iter_sessions

META = SessionMeta("veh", "op", "purpose", "1")


def test_killed_right_after_session_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """session.json is the last file create() writes: a crash right after it (before the
    writer opens its journals) still leaves a session that checks and recovers."""

    def crash(*a: object, **k: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(SessionWriter, "__init__", crash)
    with pytest.raises(SystemExit):
        SessionWriter.create(tmp_path, META)
    monkeypatch.undo()
    (path,) = list(iter_sessions(tmp_path))
    assert check_session(path).frames == 0
    SessionWriter.recover(path).close()
    assert check_session(path).status == "closed"


def test_killed_while_building_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash before the rename leaves only a temporary folder: no session, no collision."""
    import capture.session as cs

    def crash(*a: object, **k: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(cs.os, "rename", crash)
    with pytest.raises(SystemExit):
        SessionWriter.create(tmp_path, META)
    monkeypatch.undo()
    assert list(iter_sessions(tmp_path)) == []
    assert [p.name[:5] for p in tmp_path.iterdir()] == [".tmp-"]
    from capture.daemon import recover_open_sessions

    assert recover_open_sessions(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_same_second_restart_gets_a_suffix(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    t = datetime(2026, 1, 1, tzinfo=UTC)
    a = SessionWriter.create(tmp_path, META, start=t)
    b = SessionWriter.create(tmp_path, META, start=t)
    assert b.path.name == a.path.name + "-2"
    a.close()
    b.close()
    assert [check_session(p).status for p in iter_sessions(tmp_path)] == ["closed", "closed"]
