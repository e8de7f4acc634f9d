#!/usr/bin/env bash
# Install everything the test suite needs (Python deps into .venv, Debian tools) and run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
install_system_packages gpsd gpsd-clients chromium fonts-dejavu-core fonts-noto-cjk
ensure_venv
"$VENV/bin/pip" install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/pip" install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
install_face_weights
exec "$VENV/bin/python" -m pytest "$@"
