"""Every storage request of one scan, on a time line around trivy's exit (issue 18).

Run from the repo root: ``.venv/bin/python bench/scan_requests.py``.

Three scans against its own Azurite and registry: the small sample image from a
tarball (what ``bench_scan.py`` times), the same image's first scan from the registry
by digest (which stores its inventory), and, after a DB update, its inventory rescan
(``RESCAN_FROM=inventory``). For each, every HTTP request the Azure SDK sends (method,
blob path without the SAS, start and end in ms relative to trivy's exit, thread) and
whether it is on the critical path: it ends after trivy exited, before ``scan()``
returned. Nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from urllib.parse import unquote, urlsplit  # noqa: E402

from azure.core.pipeline.transport import RequestsTransport  # noqa: E402

from bench.bench_scan import CONTAINER, build_fixture, scanner_environment, trivy_executable  # noqa: E402
from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.config.cache import forget_config  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.trivy import Trivy  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.trivy_db import Advisory, build_trivy_db  # noqa: E402

LEARNT = Advisory("CVE-2099-0400", "zlib", "1.2.13-r9", "HIGH", "zlib: learnt before the rescan")
_events: list[tuple[str, str, float, float, str]] = []
_trivy_exit: list[float] = []


def _record_requests() -> None:
    send = RequestsTransport.send
    run_report = Trivy.run_report

    def recorded_send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return send(self, request, **kwargs)
        finally:
            path = unquote(urlsplit(request.url).path).split(f"/{CONTAINER}/", 1)[-1]
            query = urlsplit(request.url).query
            comp = next((part for part in query.split("&") if part.startswith(("comp=", "restype="))), "")
            _events.append((request.method, path + (f"?{comp}" if comp else ""), started, time.perf_counter(),
                            threading.current_thread().name))

    def recorded_run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return run_report(self, *args, **kwargs)
        finally:
            _trivy_exit.append(time.perf_counter())

    RequestsTransport.send = recorded_send  # type: ignore[method-assign]
    Trivy.run_report = recorded_run  # type: ignore[method-assign]


def scan_and_list(label: str, request: ScanRequest) -> None:
    _events.clear()
    _trivy_exit.clear()
    scanner = Scanner(load_config_cached())
    started = time.perf_counter()
    outcome = scanner.scan(request)
    returned = time.perf_counter()
    if not outcome.succeeded:
        raise SystemExit(f"{label}: {outcome.meta.failure_description}")
    exit_at = _trivy_exit[-1] if _trivy_exit else started
    print(f"\n## {label}: scan() {1000 * (returned - started):.0f} ms, trivy exited at "
          f"{1000 * (exit_at - started):.0f} ms, returned {1000 * (returned - exit_at):.0f} ms after it")
    print(f"{'':3}{'start':>7}{'end':>7}  {'method':<7}{'blob (ms relative to trivy exit)':<80}thread")
    critical = 0
    for method, path, begin, end, thread in sorted(_events, key=lambda event: event[2]):
        on_path = end > exit_at
        critical += on_path
        print(f"{'*' if on_path else ' ':3}{1000 * (begin - exit_at):7.0f}{1000 * (end - exit_at):7.0f}  "
              f"{method:<7}{path[:78]:<80}{thread}")
    print(f"{len(_events)} requests, {critical} on the critical path (*)")


def main() -> int:
    _record_requests()
    trivy = trivy_executable()
    with tempfile.TemporaryDirectory(prefix="scan-requests-") as tmp:
        work = Path(tmp)
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            fixture = build_fixture(work / "small", SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
            azurite.create_container(CONTAINER)
            for name in [name for name in os.environ if name.startswith(("TRIVY_", "RESCAN_"))]:
                del os.environ[name]
            os.environ.update(
                scanner_environment(azurite.container_sas_url(CONTAINER), trivy, fixture, work / "scanner.yaml")
            )
            (work / "scanner.yaml").write_text(json.dumps({"registries": [{
                "address": registry.address, "username": registry.username, "password": registry.password,
                "insecure": True}]}))
            forget_config()
            digest = registry.push_docker_archive(fixture.tar, "sample/app", "1.0")
            reference = f"{registry.address}/sample/app@{digest}"
            Scanner(load_config_cached()).scan(ScanRequest(audit_id="warm-up", requested_at=utc_now(),
                                                           input_tar=fixture.tar))
            scan_and_list("small image from a tarball (bench_scan.py's case)",
                          ScanRequest(audit_id="tarball", requested_at=utc_now(), input_tar=fixture.tar))
            scan_and_list("registry image, first scan by digest (stores its inventory)",
                          ScanRequest(audit_id="first", requested_at=utc_now(), image=reference, trigger="watch"))
            day = datetime.now(timezone.utc) + timedelta(days=1)
            build_trivy_db(fixture.cache_dir, SAMPLE_ADVISORIES + (LEARNT,), updated_at=day,
                           next_update=day + timedelta(days=1))
            scan_and_list("inventory rescan (RESCAN_FROM=inventory)",
                          ScanRequest(audit_id="rescan", requested_at=utc_now(), image=reference, trigger="rescan"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
