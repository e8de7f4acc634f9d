#!/usr/bin/env bash
# Install everything the test suite needs (Python deps into .venv, Debian tools) and run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
install_system_packages gpsd gpsd-clients chromium fonts-dejavu-core fonts-noto-cjk
ensure_venv
pip_install "torch==2.13.0"
pip_install -e '.[dev]'
install_face_weights
exec "$VENV/bin/python" -m pytest "$@"
