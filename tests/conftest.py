"""Shared fixtures. Real data comes from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STREETVEIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/data; tests that need real data fail loudly if it is missing."""
    if not SHARED.is_dir():
        pytest.fail(f"real test data not found at {SHARED} (set STREETVEIL_SHARED_DATA)")
    return SHARED


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``streetveil`` in a subprocess, as a user would."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or ROOT, env=e, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def sample_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic session (24 frames), written once per test run; treat as read-only."""
    from pipeline.sample import make_sample_session

    return make_sample_session(tmp_path_factory.mktemp("sample"))
