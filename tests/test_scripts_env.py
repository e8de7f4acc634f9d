"""scripts/_env.sh: a failed install must fail scripts/test.sh and scripts/demo.sh (a hidden
pip failure would turn into skipped or misleading tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

FAKE_PIP = """#!/bin/sh
echo "WARNING: Location noise"
case "$*" in *missing-package*) echo "ERROR: No matching distribution" >&2; exit 1;; esac
echo "installed $*"
"""


@pytest.mark.parametrize(("package", "rc"), [("present-package", 0), ("missing-package", 1)])
def test_pip_install_passes_pip_failures_on(tmp_path: Path, package: str, rc: int) -> None:
    pip = tmp_path / "venv" / "bin" / "pip"
    pip.parent.mkdir(parents=True)
    pip.write_text(FAKE_PIP)
    pip.chmod(0o755)
    script = f'set -euo pipefail; source scripts/_env.sh; pip_install {package}; echo "went on"'
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "STREETVEIL_VENV": str(tmp_path / "venv")})
    assert r.returncode == rc, r.stdout + r.stderr
    assert ("went on" in r.stdout) == (rc == 0)
    assert "WARNING: Location" not in r.stdout + r.stderr
