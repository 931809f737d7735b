"""What the approval gate adds to each audit, and what its routes cost.

Run from the repo root: ``.venv/bin/python bench/bench_approvals.py [--requests N] [--rounds R]``.

Against a fresh Azurite: the follow-up of an audit whose image has no request
and whose trigger creates none (one GET: what every rescan of an unrequested
image pays), of a first audit (the request created: document, history, four
index rows), of a later audit (read, revocation check, one conditional write,
two index rows), a reviewer's decision, one page of 50 of N requests, and the
daily digest over N images: from one walk of the fleet state (issue 24; each
request's store hook keeps its image's state, as the app's is) beside the old
path, listing the approvals index. Bare ``trivy image`` of the sample Alpine tarball, with the
test DB, for scale. Medians of R rounds; nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from scanner_core.approvals import (  # noqa: E402
    ApprovalBook, ApprovalStore, Decision, Reviewer, approval_id, build_digest, decide_request)
from scanner_core.models import AuditMeta, AuditResult  # noqa: E402
from scanner_core.storage import FleetState, fleet_table, resolve_account_connection  # noqa: E402
from scanner_core.trivy import ScanTarget, Trivy, TrivyOptions, child_environment  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402


def meta(n: int, trigger: str | None, audit: str) -> AuditMeta:
    digest = "sha256:" + f"{n:064x}"
    return AuditMeta(audit_id=audit, scanner_id="be5c4000-0000-4000-8000-00000000a99c", scanner_version="bench",
                     timestamp=int(time.time()), requested_at=int(time.time()), audit_result=AuditResult.SUCCEEDED,
                     trigger=trigger, image=f"registry.example.com/bench/app-{n}:1.0@{digest}",  # type: ignore[arg-type]
                     image_digest=digest, scan_status="passed", summary="PASSED",
                     vulnerabilities={"critical": 0, "high": n % 5, "medium": 1, "low": 1, "unknown": 0, "total": 2})


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, Azurite(Path(temp) / "azurite") as azurite:
        work = Path(temp)
        azurite.create_container("bench")
        connection = resolve_account_connection("Bench", {"Bench": azurite.connection_string})
        state = FleetState(fleet_table(connection, f"bench{uuid.uuid4().hex[:8]}images"))
        store = ApprovalStore(azurite.container_sas_url("bench"), "be5c4000", fleet_state=lambda: state)
        book = ApprovalBook(store, None)
        for n in range(args.requests + args.rounds):  # the scan path writes the image's state first
            state.record(meta(n, "watch", f"s-{n}"), f"trivy-be5c4000/s-{n}")
        figures: dict[str, list[float]] = {k: [] for k in ("no-request", "create", "follow", "decide", "page-50")}
        for n in range(args.requests):
            book.after_audit(meta(n, "watch", f"w-{n}"))
        base = args.requests
        for r in range(args.rounds):
            figures["no-request"].append(timed(lambda: book.after_audit(meta(10_000 + r, "rescan", f"x-{r}"))))
            figures["create"].append(timed(lambda: book.after_audit(meta(base + r, "watch", f"c-{r}"))))
            figures["follow"].append(timed(lambda: book.after_audit(meta(base + r, "rescan", f"f-{r}"))))
            identifier = approval_id(f"registry.example.com/bench/app-{base + r}", "sha256:" + f"{base + r:064x}")
            _, etag = store.get(identifier)  # type: ignore[misc]
            figures["decide"].append(timed(lambda: decide_request(
                store, identifier, Decision("approve", Reviewer("bench", False), None), etag, "2026-12-02T00:00:00Z")))
            figures["page-50"].append(timed(lambda: store.page(50, state="pending")))
        digest_ms = timed(lambda: build_digest(state.approvals(time.time()), time.time()))
        index_ms = timed(lambda: list(store.rows()))  # the old path's read (it built the event from these rows)

        cache = work / "cache"
        build_trivy_db(cache, SAMPLE_ADVISORIES)
        tar = build_alpine_image(work / "sample.tar", SAMPLE_PACKAGES).path
        options = TrivyOptions(cache_dir=cache, timeout_ms=600_000, skip_db_update=True, cache_backend="memory",
                               offline_scan=True)
        command = Trivy(Path(sys.prefix) / "bin" / "trivy").build_command(ScanTarget(input_tar=tar), options,
                                                                           work / "out.json")
        home = work / "home"
        home.mkdir()
        bare = [timed(lambda: subprocess.run(command, env=child_environment(None, home), cwd=home, check=True,
                                             capture_output=True)) for _ in range(5)]
    bare_ms = statistics.median(bare)
    print(f"approval gate, {args.requests + args.rounds} requests in Azurite, medians of {args.rounds} rounds")
    print(f"{'operation':<44}{'ms':>9}{'x bare trivy':>14}")
    rows = [("audit follow-up, no request (one GET)", "no-request"), ("audit follow-up, first audit (create)", "create"),
            ("audit follow-up, later audit (refresh)", "follow"), ("reviewer decision (read + If-Match write)", "decide"),
            ("GET /approvals page of 50 pending", "page-50")]
    for label, key in rows:
        value = statistics.median(figures[key])
        print(f"{label:<44}{value:>9.1f}{value / bare_ms:>14.3f}")
    print(f"{'digest from the fleet state (one walk)':<44}{digest_ms:>9.1f}{digest_ms / bare_ms:>14.3f}")
    print(f"{'  old: listing the approvals index':<44}{index_ms:>9.1f}{index_ms / bare_ms:>14.3f}")
    print(f"{'bare trivy image (sample tarball)':<44}{bare_ms:>9.1f}{1:>14.3f}")


if __name__ == "__main__":
    main()
