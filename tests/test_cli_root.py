"""CLI root: fast help/version that import no heavy runtime; exit-code mapping."""

from __future__ import annotations

import subprocess
import sys

from conftest import run_cli

HEAVY = ("torch", "dask", "distributed", "onnxruntime", "onnx", "cv2")


def test_help_and_version_import_no_heavy_runtime() -> None:
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "for argv in (['--help'], ['--version'], ['run', '--help'], ['redact', '--help'], "
        "['capture', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("streetveil ")


def test_unknown_command_is_usage_error() -> None:
    r = run_cli("no-such-command")
    assert r.returncode == 2
    assert "no-such-command" in r.stderr
