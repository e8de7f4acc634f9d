#!/usr/bin/env bash
# The bundled example: install streetveil, generate a synthetic sample session, run the
# nightly job on it on a local Dask cluster, verify the audit chain, and say where it all is.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]   (default: ./example)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
OUT="${1:-example}"
ensure_venv
pip_install -e '.[demo]'
install_face_weights
SV="$VENV/bin/streetveil"
rm -rf "$OUT/sessions" "$OUT/publish"
echo "== 1. a synthetic sample session (procedurally drawn streets, public-domain faces, rendered plates)"
"$SV" session sample "$OUT/sessions"
SESSION=$(ls -d "$OUT"/sessions/*/ | head -n 1)
"$SV" session check "$SESSION"
echo "== 2. the nightly job on a local Dask cluster"
"$SV" run "$SESSION" --out "$OUT/publish" --config configs/nightly.toml
echo "== 3. verify the published set and its audit chain"
"$SV" audit verify "$OUT/publish"
echo
echo "Published for the GIS team: $OUT/publish/$(basename "$SESSION")/"
echo "  images/*.jpg (redacted, EXIF GPS), frames.geojson, track.geojson, notice.html, manifest.json"
echo "  audit log: $OUT/publish/$(basename "$SESSION")/audit.jsonl"
