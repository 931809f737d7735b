"""Queue semantics under faults, at size: >= 100 messages through real listener processes.

Run from the repo root: ``.venv/bin/python bench/bench_faults.py [--messages 120]``.

The same harness as ``tests/test_queue_faults.py`` (``tests/support/fault_harness.py``),
with its own Azurite, registry (the sample image pushed), trivy DB and container:
two ``python -m scanner_core listen`` processes (competing consumers, 2 workers
each, root logger at DEBUG) work the queue while trivy is killed mid-scan, the
registry is killed -9 and restarted, Azurite is stopped and restarted on its ports
and data, and some images sit on a registry that accepts connections and never
answers. Backoff for the run: 1 s doubling to 4 s, 5 attempts; TRIVY_TIMEOUT 3 s.

Prints: messages, faults injected, lost, duplicated, how they ended, trivy
processes left, secret-bearing log lines, and p50/p95 latency from enqueue to
``meta``. Nothing is asserted; the test asserts the invariant at a smaller size.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.fault_harness import FaultPlan, run_faults  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=120)
    parser.add_argument("--hung", type=int, default=4, help="messages for the registry that never answers")
    parser.add_argument("--listeners", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--trivy-kills", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    trivy = Path(sys.prefix) / "bin" / "trivy"
    if not trivy.is_file():
        raise SystemExit(f"no trivy at {trivy}: run scripts/setup.sh first")

    with tempfile.TemporaryDirectory(prefix="bench-faults-") as temp:
        work = Path(temp)
        cache = work / "trivy-cache"
        build_trivy_db(cache, SAMPLE_ADVISORIES, updated_at=datetime(2026, 11, 1, tzinfo=UTC),
                       next_update=datetime(2026, 11, 2, tzinfo=UTC))
        image = build_alpine_image(work / "sample.tar", SAMPLE_PACKAGES)
        (work / "azurite").mkdir()
        (work / "registry").mkdir()
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            registry.push_docker_archive(image.path, "team/app", "1.0")
            container = f"audits-{uuid.uuid4().hex[:12]}"
            azurite.create_container(container)
            sas_url = azurite.container_sas_url(container)
            env = {
                "SCANNER_IDENTIFIER": str(uuid.uuid4()), "AZ_BLOB_STORAGE_SAS": sas_url, "TRIVY_PATH": str(trivy),
                "TRIVY_CACHE_DIR": str(cache), "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true",
                "LOG_FORMAT": "plain-text",
            }
            plan = FaultPlan(messages=args.messages, hung_messages=args.hung, listeners=args.listeners,
                             concurrency=args.concurrency, trivy_kills=args.trivy_kills, timeout_seconds=args.timeout)
            report = run_faults(plan, azurite=azurite, registry=registry, image=f"{registry.address}/team/app:1.0",
                                scanner_env=env, container_sas_url=sas_url, config_path=work / "scanner.yaml",
                                workdir=work)
    p50 = statistics.median(report.latencies) if report.latencies else float("nan")
    print(f"messages:          {report.messages} ({args.hung} for a registry that never answers), "
          f"{args.listeners} listeners x {args.concurrency} workers")
    print(f"faults injected:   {len(report.faults)}")
    for fault in report.faults:
        print(f"                   - {fault}")
    print(f"lost:              {len(report.lost)} {report.lost[:5]}")
    print(f"duplicated:        {len(report.duplicated)} {report.duplicated[:5]}")
    print(f"ended as:          {report.succeeded} succeeded, {report.audit_failed} audit-failed, "
          f"{report.quarantined} quarantined with a reason ({len(report.unexplained_poison)} without)")
    print(f"trivy left:        {report.trivy_left}")
    print(f"secret log lines:  {len(report.leaked_lines)}")
    print(f"enqueue -> meta:   p50 {p50:.1f} s, p95 {report.percentile(0.95):.1f} s")
    print(f"total:             {report.elapsed_seconds:.1f} s; listener exit codes {report.listener_exit_codes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
