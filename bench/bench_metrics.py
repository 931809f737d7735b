"""What a scrape of ``GET /api/metrics`` costs as the index grows.

Run from the repo root: ``.venv/bin/python bench/bench_metrics.py [--audits N] [--images I] [--rounds R]``.

Records N synthetic audits of I images in the audit index (Azurite), plus a
heartbeat and a queue, then times R scrapes: reading the snapshot (since issue 24
the fleet state, the fleet snapshot and the audit tally, which the first read takes;
the heartbeat, two queue depths) and rendering the exposition; prints the
medians, the answer's size and its series. Starts its own Azurite under a temp
dir; writes JSON to ``bench/out/metrics-<timestamp>.json``. Nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from azure.storage.queue import QueueClient  # noqa: E402

from scanner_core.metrics import read_snapshot, render_prometheus  # noqa: E402
from scanner_core.models import HeartbeatMeta  # noqa: E402
from scanner_core.storage import (  # noqa: E402
    AuditIndex, FleetState, fleet_table, heartbeat_blob, resolve_account_connection)
from tests.support.azurite import Azurite  # noqa: E402
from tests.test_audit_index import folder_of, synthetic_meta  # noqa: E402

OUT_DIR = REPO_ROOT / "bench" / "out"
SHORT_ID = "0123abcd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--audits", type=int, default=2000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-images", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, Azurite(Path(work)) as azurite:
        azurite.create_container("audits")
        url = azurite.container_sas_url("audits")
        now = int(time.time())
        metas = [
            synthetic_meta(i, requested_at=now - 37 * (args.audits - i),
                           image=f"registry.example.com/team/app-{i % args.images}:1.{i % 7}")
            for i in range(args.audits)
        ]  # fmt: skip
        fleet = FleetState(fleet_table(resolve_account_connection("Bench", {"Bench": azurite.connection_string}),
                                       "benchmetricsimages"))
        with AuditIndex(url, SHORT_ID) as index, ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda meta: index.record(meta, folder_of(meta)), metas))
            list(pool.map(lambda meta: fleet.record(meta, folder_of(meta)), metas))  # as the ship stage does
            heartbeat = HeartbeatMeta(scanner_id="x", heartbeat_periodicity=300, heartbeat=now,
                                      trivy_db_updated_at="2026-11-01T00:00:00Z", trivy_db_stale=False)  # fmt: skip
            index._container.upload_blob(heartbeat_blob(SHORT_ID), heartbeat.to_json_bytes(), overwrite=True)
        with QueueClient.from_connection_string(azurite.connection_string, "scans") as queue:
            queue.create_queue()
        reads, renders = [], []
        body = b""
        for _ in range(args.rounds):
            started = time.perf_counter()
            snapshot = read_snapshot(url, SHORT_ID, azurite.connection_string, "scans", fleet=fleet,
                                     max_images=args.max_images)
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            body, _ = render_prometheus(snapshot)
            renders.append(time.perf_counter() - started)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    figures = {
        "audits": args.audits,
        "images": args.images,
        "read_snapshot_ms_median": round(statistics.median(reads) * 1000, 1),
        "render_ms_median": round(statistics.median(renders) * 1000, 1),
        "per_audit_ms": round(statistics.median(reads) * 1000 / args.audits, 3),
        "answer_bytes": len(body),
        "series": series,
    }
    print("| audits | images | read snapshot (median) | render (median) | per audit | answer | series |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.audits} | {args.images} | {figures['read_snapshot_ms_median']} ms | {figures['render_ms_median']} ms"
          f" | {figures['per_audit_ms']} ms | {len(body) // 1024} KiB | {series} |")
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (OUT_DIR / f"metrics-{stamp}.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
