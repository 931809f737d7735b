#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite against the real parts
# (trivy, Azurite, a private registry). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
