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


# The nightly-job tests (test_pipeline_*, test_dask_*, test_publish*, test_purge*) share one
# small session and its serial-path publication: detection costs ~0.3 s per frame per core.
JOB_FRAMES = 8


@pytest.fixture(scope="session")
def job_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic session of JOB_FRAMES frames; treat as read-only (copy it to change it)."""
    from pipeline.sample import make_sample_session

    return make_sample_session(tmp_path_factory.mktemp("job-session"), frames=JOB_FRAMES)


@pytest.fixture(scope="session")
def serial_publication(job_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``streetveil redact SESSION --out DIR`` (the serial path) on ``job_session``: the oracle
    for the Dask job. Returns the published session folder; treat as read-only."""
    out = tmp_path_factory.mktemp("serial-publish")
    r = run_cli("redact", str(job_session), "--out", str(out), "--config", str(CONFIGS / "nightly.toml"),
                "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    return out / job_session.name


def read_ogr(path: Path) -> tuple[dict, dict, list]:  # type: ignore[type-arg]
    """Open a vector file with GDAL/OGR (pyogrio): (layer info, {field: values}, geometries)."""
    import shapely
    from pyogrio.raw import read

    meta, _, wkb, values = read(path)
    fields = dict(zip(meta["fields"], (list(v) for v in values), strict=True))
    return meta, fields, [None if g is None else shapely.from_wkb(g) for g in wkb]
