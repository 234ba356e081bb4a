#!/usr/bin/env bash
# Set up SERM on a fresh machine, then run what was asked:
#   bash scripts/setup.sh evolve   # set up, then one evolution round on policies/default.yaml
#   bash scripts/setup.sh test     # set up, then the test suite
#   bash scripts/setup.sh          # set up only
# Idempotent: the venv is rebuilt only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1

stamp="$VENV/.serm-installed"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # Say what is missing before a half-made venv does: Python 3.10+ with venv and ensurepip (pip).
  command -v "$PY" >/dev/null || { echo "[setup] $PY not found: install Python 3.10 or newer" \
    "(Debian/Ubuntu: apt-get install python3 python3-venv), or set PYTHON=/path/to/python3" >&2; exit 1; }
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "[setup] $("$PY" -V 2>&1) is too old:" \
    "SERM needs Python 3.10 or newer (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
  "$PY" -c 'import venv, ensurepip' 2>/dev/null || { pyv=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    echo "[setup] $PY has no venv/ensurepip module (pip for virtual environments): install the package" \
    "python${pyv}-venv (Debian/Ubuntu: apt-get install python${pyv}-venv), then run this again" >&2; exit 1; }
  echo "[setup] creating $VENV"
  # A GPU machine's own torch build is kept: the venv sees system packages when torch is there.
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m venv --system-site-packages "$VENV"
    extras="test,export"
  else
    "$PY" -m venv "$VENV"
    extras="cpu,test,export"   # pins torch==2.13.0 (CPU build)
  fi
  "$VENV/bin/pip" install -q --upgrade pip
  # torch first, on its own: resolving it inside the big install could pick a CUDA build.
  if [ "$extras" = "cpu,test,export" ]; then "$VENV/bin/pip" install -q "torch==2.13.0"; fi
  "$VENV/bin/pip" install -q -e ".[$extras]"
  echo "$want" > "$stamp"
  echo "[setup] installed in ${SECONDS}s"
fi

# The workspace's data/ must match data.dvc (DVC cache or local remote); a fresh clone's
# data.dvc describes the empty first version.
"$VENV/bin/python" - <<'PY'
from serm import versioning
from serm.workspace import Workspace
ws = Workspace.at(".")
versioning.ensure_data(ws)
PY

# The Feast-on-Redis test starts a real redis-server (Debian package redis-server).
need_redis() {
  command -v redis-server >/dev/null && return 0
  echo "[setup] installing redis-server (Debian package) for the Redis online-store test"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "[setup] redis-server is missing and this user cannot install it:" \
      "install the Debian package redis-server (apt-get install redis-server) as root" >&2; exit 1; }
    sudo="sudo"
  fi
  command -v apt-get >/dev/null || { echo "[setup] redis-server is missing and this system has no apt-get: install" \
    "redis-server with your package manager; tests/serm/test_redis_online_store.py (Feast on Redis) needs it" >&2; exit 1; }
  $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    || { echo "[setup] apt-get could not install redis-server; install it by hand" >&2; exit 1; }
}

# The dashboard browser test (tests/serm/test_ui.py) renders the Evidently UI in headless Chromium.
need_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  echo "[setup] installing chromium (Debian package) for the dashboard browser test"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "[setup] /usr/bin/chromium is missing and this user cannot install it:" \
      "install the Debian package chromium (apt-get install --no-install-recommends chromium) as root" >&2; exit 1; }
    sudo="sudo"
  fi
  command -v apt-get >/dev/null || { echo "[setup] /usr/bin/chromium is missing and this system has no apt-get:" \
    "install chromium with your package manager; tests/serm/test_ui.py (the dashboard in a headless browser)" \
    "needs it" >&2; exit 1; }
  $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends chromium >/dev/null && [ -x /usr/bin/chromium ] \
    || { echo "[setup] apt-get could not install chromium; install the Debian package chromium by hand" >&2; exit 1; }
}

case "${1:-}" in
  evolve) shift; exec "$VENV/bin/serm" evolve "$@" ;;
  # One test module per worker, a worker per core (SERM_TEST_WORKERS=0: in this process).
  test)   shift; need_redis; need_chromium
          exec "$VENV/bin/python" -m pytest -m "not slow" -n "${SERM_TEST_WORKERS:-auto}" --dist loadfile "$@" ;;
  "")     echo "[setup] done: $VENV" ;;
  *)      echo "unknown command ${1}; use: evolve | test" >&2; exit 2 ;;
esac
