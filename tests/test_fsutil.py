"""Atomic writes: whole files only, and the permissions a plain ``open()`` would give."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.fsutil import atomic_write_bytes, atomic_write_text, current_umask


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize(("mask", "mode", "expect"), [
    (0o022, 0o666, 0o644),  # the default: what open(path, "w") gives
    (0o002, 0o666, 0o664),
    (0o077, 0o666, 0o600),
    (0o022, 0o640, 0o640),  # a narrower mode asked for
    (0o027, 0o644, 0o640),  # the umask narrows it further
])
def test_written_files_get_the_mode_open_would_give(tmp_path: Path, mask: int, mode: int, expect: int) -> None:
    p = tmp_path / "out.bin"
    with umask(mask):
        assert current_umask() == mask
        atomic_write_bytes(p, b"data", mode=mode)
    assert p.read_bytes() == b"data" and _mode(p) == expect
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]  # no temp file left


def test_replacing_a_file_keeps_it_whole_and_readable(tmp_path: Path) -> None:
    p = tmp_path / "notice.txt"
    with umask(0o022):
        atomic_write_text(p, "old")
        atomic_write_text(p, "new", durable=False)
    assert p.read_text() == "new" and _mode(p) == 0o644
