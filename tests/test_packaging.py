"""A non-editable install must hold every data file the code reads from its own packages
(models, their measured recall and licences, schemas, templates)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_package_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (whl,) = tmp_path.glob("streetveil-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    wanted = [p.relative_to(ROOT).as_posix() for d in ("redact/models", "capture/schemas", "pipeline/templates")
              for p in sorted((ROOT / d).iterdir()) if p.is_file()]
    assert len(wanted) >= 12
    missing = [w for w in wanted if w not in names]
    assert not missing, f"not in the wheel (pyproject [tool.setuptools.package-data]): {missing}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
