#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite against the real parts (trivy, Azurite,
# a private registry) on the default interpreter (.venv, Python 3.11), then the worker tests
# (tests/worker/: the deployment package under the real Python worker library) on Python 3.13
# (.venv-3.13). Both must pass. Extra arguments go to the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/python -m pytest "$@" || status=$?
worker_status=0
.venv-3.13/bin/python -m pytest tests/worker || worker_status=$?
if [ "$status" -ne 0 ]; then exit "$status"; fi
exit "$worker_status"
