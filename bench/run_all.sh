#!/usr/bin/env bash
# Every benchmark of issues 11, 18 and 25 in one go, then one table of the figures beside their goals
# (bench/summary.py). Each script measures bare trivy in the same run. About a minute.
#   bash bench/run_all.sh                 # after scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT="bench/out/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
echo "[run_all] results in $OUT" >&2
$PY bench/bench_scan.py --rounds 9 --json "$OUT/scan.json" > "$OUT/scan.txt"
$PY bench/bench_cold_start.py --runs 9 --json "$OUT/cold_start.json" > "$OUT/cold_start.txt"
$PY bench/bench_fleet.py --instances 4 --json "$OUT/fleet.json" > "$OUT/fleet.txt"
$PY bench/bench_server.py --size-mib 112 --json "$OUT/server.json" > "$OUT/server.txt"
# The fleet's rescan pass (issue 18); RESCAN_IMAGES=200 for the full fleet (~15 min on 2 vCPUs).
$PY bench/bench_rescan.py --images "${RESCAN_IMAGES:-20}" --big-mib 112 --json "$OUT/rescan.json" > "$OUT/rescan.txt"
# The egress proxy's cost (issue 23): through it vs direct, same image, same run.
$PY bench/bench_egress.py --size-mib 112 --rounds 5 --json "$OUT/egress.json" > "$OUT/egress.txt"
# Issue 26.4: sustained throughput vs bare `trivy image` at C = 1, 2, 4 (the per-vCPU rate the fleet cost uses).
$PY bench/bench_listener.py --json "$OUT/listener.json" > "$OUT/listener.txt"
$PY bench/bench_concurrency.py --bare --concurrency 1,2,4 --scans-per-worker 4 --json "$OUT/concurrency.json" \
  > "$OUT/concurrency.txt"
# Issue 25.4: an AdmissionReview of a Pod with 10 images, single and 50 concurrent, p50/p99 beside the goals.
$PY bench/bench_admission.py --json "$OUT/admission.json" > "$OUT/admission.txt"
$PY bench/summary.py "$OUT" | tee "$OUT/summary.md"
