"""Sustained throughput per vCPU through the stand-alone listener (issue 18), against bare
``trivy image`` at the same concurrency.

Run from the repo root: ``.venv/bin/python bench/bench_listener.py [--concurrency 1,2,4] [--scans-per-worker K]``.

A mid-size image (``large_fixture``, ``--packages``) is pushed to a registry; Azurite holds
the queue and the audits. For each C: a ``python -m scanner_core listen --concurrency C``
process is started; after C warm-up requests, C x K requests (by tag, so dedup never
answers one) are enqueued at once, and the wall time runs until all C x K metas are written (after C warm-up scans, so that
the listener's start-up and its empty-queue polling back-off are not counted).
The listener's RSS (Python) and that of its trivy children are sampled every 50 ms. Then the
same C x K scans as bare ``trivy image`` (the core's command and credentials) from C threads.
Per C: scans per minute, per vCPU, and the peak memory per concurrent scan (listener and trivy
processes' summed RSS over C), beside bare trivy's. The emulated host (``Scanner.scan`` on C
threads of one process, as the Functions host runs invocations) is ``bench_concurrency.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

from azure.storage.queue import QueueClient  # noqa: E402

from bench.bench_concurrency import _status_fields  # noqa: E402
from bench.bench_rescan import run_bare  # noqa: E402
from bench.bench_scan import say  # noqa: E402
from scanner_core.queue import build_message  # noqa: E402
from scanner_core.registry import parse_image_reference  # noqa: E402
from scanner_core.trivy import ScanTarget, Trivy, TrivyOptions  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import build_alpine_image, large_fixture  # noqa: E402
from tests.support.listener import ListenerProcess, listener_env  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402

SCANNER_ID = "5e7e7000-0000-4000-8000-000000000418"


def tree_rss_mib(root: int) -> float:
    """The summed VmRSS of ``root`` and its children (the listener and its trivy processes)."""
    total = _status_fields(root, ("VmRSS",)).get("VmRSS", 0)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _status_fields(entry.name, ("PPid",)).get("PPid") == root:
            total += _status_fields(entry.name, ("VmRSS",)).get("VmRSS", 0)
    return total / 1024


class PeakSampler:
    def __init__(self, measure) -> None:  # type: ignore[no-untyped-def]
        self.measure, self.peak = measure, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def own_trivy_rss_mib(trivy: str) -> float:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/exe") != trivy:
                continue
        except OSError:
            continue
        if _status_fields(entry.name, ("PPid",)).get("PPid") == os.getpid():
            total += _status_fields(entry.name, ("VmRSS",)).get("VmRSS", 0)
    return total / 1024


def recorded(log: Path) -> int:
    """Audits the listener recorded so far: its log's "audit recorded" lines (reading the log
    costs nothing, where listing the container would load Azurite on the same CPUs)."""
    return log.read_text(errors="replace").count("audit recorded") if log.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--scans-per-worker", type=int, default=4)
    parser.add_argument("--packages", type=int, default=1500)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy the listeners' logs into this directory")
    parser.add_argument("--timeout", type=float, default=600, help="longest wait for one C's scans (s)")
    args = parser.parse_args(argv)
    levels = [int(part) for part in args.concurrency.split(",")]
    trivy_path = Path(sys.prefix) / "bin" / "trivy"
    cpus = os.cpu_count() or 1
    results: dict[str, Any] = {"cpus": cpus, "load_before": os.getloadavg(), "listener": {}, "bare": {}}
    with tempfile.TemporaryDirectory(prefix="bench-listener-") as tmp:
        work = Path(tmp)
        packages, advisories = large_fixture(args.packages, 2)
        build_trivy_db(work / "cache", advisories)
        tarball = build_alpine_image(work / "mid.tar", packages, repo_tag="bench/mid:1.0")
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            registry.push_docker_archive(tarball.path, "bench/mid", "1.0")
            reference = f"{registry.address}/bench/mid:1.0"
            azurite.create_container("audits")
            config = work / "scanner.yaml"
            config.write_text(json.dumps({"registries": [{"address": registry.address, "username": registry.username,
                                                          "password": registry.password, "insecure": True}]}))
            for name in [name for name in os.environ if name.startswith(("TRIVY_", "DB_SNAPSHOT"))]:
                del os.environ[name]
            os.environ.update({
                "SCANNER_IDENTIFIER": SCANNER_ID, "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url("audits"),
                "TRIVY_CONFIG_PATH": str(config), "TRIVY_PATH": str(trivy_path), "TRIVY_CACHE_DIR": str(work / "cache"),
                "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true", "TRIVY_TIMEOUT": "600000",
                "DB_SNAPSHOT": "none", "LOG_FORMAT": "json",
                "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,  # the loopback registry (issue 17's guard)
            })
            for level in levels:
                total = level * args.scans_per_worker
                queue = f"bench-{uuid.uuid4().hex[:12]}"
                with QueueClient.from_connection_string(azurite.connection_string, queue) as client:
                    client.create_queue()
                    log_path = work / f"listener-{level}.log"
                    listener = ListenerProcess(listener_env(azurite.connection_string, queue), log_path,
                                               ["--concurrency", str(level)]).start()
                    try:
                        before = recorded(log_path)
                        say(f"listener, C = {level}: {level} warm-up scans (imports, trivy's version, clients)")
                        for n in range(level):
                            client.send_message(build_message(reference, f"warm-{level}-{n}-{uuid.uuid4().hex[:6]}")
                                                .to_text())
                        while recorded(log_path) - before < level:
                            time.sleep(0.1)
                        say(f"listener, C = {level}: {total} scans")
                        before += level
                        with PeakSampler(lambda: tree_rss_mib(listener.pid)) as sampler:
                            started = time.perf_counter()
                            for n in range(total):
                                client.send_message(build_message(reference, f"c{level}-{n}-{uuid.uuid4().hex[:6]}")
                                                    .to_text())
                            while recorded(log_path) - before < total:
                                if time.perf_counter() - started > args.timeout:
                                    raise RuntimeError(f"listener C = {level}: not done after {args.timeout} s; its log: "
                                                           + log_path.read_text()[-3000:])
                                time.sleep(0.1)
                            wall = time.perf_counter() - started
                    finally:
                        listener.stop()
                        if args.keep_logs:
                            (args.keep_logs / log_path.name).write_text(log_path.read_text(errors="replace"))
                results["listener"][level] = {"scans": total, "wall_s": wall, "scans_per_min": total / wall * 60,
                                              "scans_per_min_per_vcpu": total / wall * 60 / cpus,
                                              "peak_rss_mib": sampler.peak, "mib_per_scan": sampler.peak / level}
                say(f"bare trivy image, C = {level}: {total} scans")
                options = TrivyOptions(cache_dir=work / "cache", timeout_ms=600_000, skip_db_update=True,
                                       cache_backend="memory", offline_scan=True, insecure_registry=True)
                command = Trivy(trivy_path).build_command(ScanTarget(image=parse_image_reference(reference)),
                                                          options, work / "bare-REPLACE.json")
                errors: list[BaseException] = []

                def worker(index: int) -> None:
                    for n in range(args.scans_per_worker):
                        try:
                            run_bare([part.replace("REPLACE", f"{index}-{n}") for part in command], registry, work)
                        except BaseException as error:  # noqa: BLE001
                            errors.append(error)

                resolved = str(trivy_path.resolve())
                with PeakSampler(lambda: own_trivy_rss_mib(resolved)) as sampler:
                    started = time.perf_counter()
                    threads = [threading.Thread(target=worker, args=(i,)) for i in range(level)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    wall = time.perf_counter() - started
                if errors:
                    raise RuntimeError("bare trivy failed") from errors[0]
                results["bare"][level] = {"scans": total, "wall_s": wall, "scans_per_min": total / wall * 60,
                                          "scans_per_min_per_vcpu": total / wall * 60 / cpus,
                                          "peak_rss_mib": sampler.peak, "mib_per_scan": sampler.peak / level}
    results["load_after"] = os.getloadavg()
    print(f"{cpus} vCPUs; load average before {results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f}; "
          f"large_fixture({args.packages}, 2), K = {args.scans_per_worker} scans per concurrent slot")
    print(f"{'C':>3}{'listener /min/vCPU':>20}{'bare /min/vCPU':>16}{'ratio':>7}{'listener MiB/scan':>19}"
          f"{'bare MiB/scan':>15}")
    for level in levels:
        own, bare = results["listener"][level], results["bare"][level]
        print(f"{level:>3}{own['scans_per_min_per_vcpu']:20.1f}{bare['scans_per_min_per_vcpu']:16.1f}"
              f"{own['scans_per_min'] / bare['scans_per_min']:7.2f}{own['mib_per_scan']:19.0f}{bare['mib_per_scan']:15.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
