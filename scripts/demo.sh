#!/usr/bin/env bash
# Sets everything up, then scans the embedded sample image once with the
# one-time runner against a local Azurite, and shows what landed in Blob Storage.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tests.support.demo "$@"
