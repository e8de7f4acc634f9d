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
