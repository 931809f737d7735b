"""A fleet's daily rescan (issue 18): N registry images scanned once, the DB updated, then
the rescan pass, with ``RESCAN_FROM=inventory`` and with ``RESCAN_FROM=image``, against bare
``trivy sbom`` and bare ``trivy image`` on the same inputs, in one run.

Run from the repo root: ``.venv/bin/python bench/bench_rescan.py [--images N] [--big-mib M] [--json PATH]``.

N - 1 small Alpine images (one layer each, distinct digests) and one big image
(``tests/support/big_image.py``, ``--big-mib`` MiB of data, default 112) are pushed to a
registry whose access log is on; Azurite holds the audits. Each image is scanned once
through ``Scanner.scan`` (trigger ``watch``): its CycloneDX inventory is stored. Then the
DB learns a CVE of the images, and every image is rescanned through ``Scanner.scan``
(trigger ``rescan``, by digest, as the rescan timer enqueues it; a new ``Scanner`` per scan
as the function app builds one per invocation), first with ``RESCAN_FROM=inventory``, then
with ``RESCAN_FROM=image`` (``SCAN_DEDUP=false``, so the second pass is not answered from
the first). Per pass: the bytes the registry served (its access log), the wall time and
the CPU seconds (this process and its trivy children) per rescan. The bare loops run trivy
with the core's exact commands (``Trivy.build_command`` / ``build_sbom_command``) on the
same images and on the same inventories, read from local files.

Issue 26 adds the batched passes, as the rescan timer now sends them: the digests in batch
messages of ``--batch`` (``pack_batches``), each delivered through the queue trigger's rules
(``handle_message``, a new ``Scanner`` per message), with ``RESCAN_SERVER=auto`` (one loopback
``trivy server`` per batch: ``trivy sbom --server``) and with ``RESCAN_SERVER=off`` (standalone
``trivy sbom``, batching alone); and a bare ``trivy sbom --server`` loop against one server, the
floor of any design that still starts a trivy process per rescan. The server's CPU counts (it is
a child reaped when its batch ends). It prints ``rescan cpu-seconds per image: <float>`` for the
batched pass as configured by default (``RESCAN_SERVER=off``; ``bench/run_all.sh`` turns it into
vCPU-hours).
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
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from typing import Any  # noqa: E402

from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.config.cache import forget_config  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.registry import Credentials, parse_image_reference  # noqa: E402
from scanner_core.trivy import LocalTrivyServer, ScanTarget, Trivy, TrivyOptions, child_environment  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.big_image import build_big_image  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry  # noqa: E402
from tests.support.trivy_db import Advisory, build_trivy_db  # noqa: E402

SCANNER_ID = "5e7e7000-0000-4000-8000-000000000018"
LEARNT = Advisory("CVE-2099-0400", "zlib", "1.2.13-r9", "HIGH", "zlib: learnt before the rescan")
DAY1 = datetime(2026, 11, 1, 6, tzinfo=timezone.utc)
# "GET /v2/... HTTP/1.1" 200 1234 (combined log format): status and bytes sent.
_SERVED = re.compile(r'"[A-Z]+ /\S* HTTP/[\d.]+" (\d{3}) (\d+|-)')


def say(text: str) -> None:
    print(f"[rescan] {text}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class AccessLog:
    """Requests and bytes the registry served since ``mark``."""

    def __init__(self, registry: Registry) -> None:
        self.path = registry.log_path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since(self) -> tuple[int, int]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
        requests, served = 0, 0
        for match in _SERVED.finditer(text):
            requests += 1
            served += int(match.group(2)) if match.group(2).isdigit() else 0
        return requests, served


def timed(action) -> tuple[float, float]:
    cpu, started = cpu_seconds(), time.perf_counter()
    action()
    return time.perf_counter() - started, cpu_seconds() - cpu


def core_scan(reference: str, audit_id: str, trigger: str) -> dict[str, Any]:
    scanner = Scanner(load_config_cached(), app_root=REPO_ROOT)  # per invocation, as the app
    request = ScanRequest(audit_id=audit_id, requested_at=utc_now(), image=reference, trigger=trigger)
    outcome = scanner.scan(request)
    if not outcome.succeeded:
        raise RuntimeError(f"{audit_id}: {outcome.meta.failure_description}")
    return outcome.meta.model_dump(by_alias=True, exclude_none=True)


def batch_pass(references: list[str], mode: str, size: int, container_url: str) -> dict[str, Any]:
    """One batched rescan pass: ``pack_batches`` then ``handle_message`` per message, as the trigger."""
    from azure.storage.blob import ContainerClient

    from scanner_core.queue import Delivery, handle_message, pack_batches

    rescans = [(reference, f"{mode}-n{n}", None) for n, reference in enumerate(references)]
    batches = pack_batches(rescans, time.time(), size)
    walls, cpus, handed_on = [], [], []
    for number, batch in enumerate(batches):
        def deliver() -> None:
            handle_message(Delivery(batch.to_text().encode(), f"{mode}-batch-{number}", 1),
                           Scanner(load_config_cached(), app_root=REPO_ROOT), max_dequeue_count=3,
                           quarantine=handed_on.append, retry_later=lambda text, delay: handed_on.append(text))
        wall, cpu = timed(deliver)
        walls.append(wall)
        cpus.append(cpu)
    if handed_on:
        raise RuntimeError(f"{mode}: {len(handed_on)} digests retried or quarantined: {handed_on[0][:500]}")
    with ContainerClient.from_container_url(container_url) as container:
        names = [b.name for b in container.list_blobs() if b.name.endswith("/meta") and f"-{mode}-n" in b.name]
        metas = [json.loads(container.download_blob(name).readall()) for name in names]
    if len(metas) != len(references):
        raise RuntimeError(f"{mode}: {len(metas)} audits for {len(references)} digests")
    fallbacks = sum("rescan-fallback" in meta for meta in metas)
    for meta in metas:
        if meta["audit-result"] != "succeeded" or LEARNT.vulnerability_id not in {
                d["VulnerabilityID"] for d in meta.get("details", [])}:
            raise RuntimeError(f"{meta['audit-id']}: the rescan did not find {LEARNT.vulnerability_id}")
    count = len(references)
    return {"total_wall_s": sum(walls), "total_cpu_s": sum(cpus), "median_wall_s": sum(walls) / count,
            "median_cpu_s": sum(cpus) / count, "count": count, "messages": len(batches), "fallbacks": fallbacks,
            "registry_requests": 0, "registry_bytes": 0, "big_wall_s": 0.0}


def run_bare(command: list[str], registry: Registry, work: Path, extra_env: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryDirectory(dir=work) as home:
        env = child_environment(Credentials(registry.address, registry.username, registry.password), Path(home))
        env.update(extra_env or {})
        completed = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"bare trivy failed: {completed.stderr[-2000:]}")


def summary(walls: list[float], cpus: list[float]) -> dict[str, float]:
    return {"total_wall_s": sum(walls), "total_cpu_s": sum(cpus), "median_wall_s": statistics.median(walls),
            "median_cpu_s": statistics.median(cpus), "count": len(walls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images in the fleet, the big one included")
    parser.add_argument("--big-mib", type=int, default=112, help="the big image's data layer (MiB, >= 100 by default)")
    parser.add_argument("--batch", type=int, default=50, help="digests per batch message (RESCAN_BATCH_SIZE)")
    parser.add_argument("--no-image-pass", action="store_true", help="skip the RESCAN_FROM=image and bare image loops")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    trivy_path = Path(sys.prefix) / "bin" / "trivy"
    trivy = Trivy(trivy_path)
    results: dict[str, Any] = {"images": args.images, "big_mib": args.big_mib, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-rescan-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        build_trivy_db(cache, SAMPLE_ADVISORIES, updated_at=DAY1, next_update=DAY1 + timedelta(days=365))
        with Azurite(work / "azurite") as azurite, Registry(work / "registry", access_log=True) as registry:
            azurite.create_container("audits")
            config = work / "scanner.yaml"
            config.write_text(json.dumps({"registries": [{"address": registry.address, "username": registry.username,
                                                          "password": registry.password, "insecure": True}]}))
            for name in [name for name in os.environ if name.startswith(("TRIVY_", "DB_SNAPSHOT", "RESCAN_"))]:
                del os.environ[name]
            os.environ.update({
                "SCANNER_IDENTIFIER": SCANNER_ID, "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url("audits"),
                "TRIVY_CONFIG_PATH": str(config), "TRIVY_PATH": str(trivy_path), "TRIVY_CACHE_DIR": str(cache),
                "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true", "TRIVY_TIMEOUT": "600000",
                "DB_SNAPSHOT": "none", "LOG_FORMAT": "json", "SCAN_DEDUP": "false", "RESCAN_FROM": "inventory",
                "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,  # the loopback registry (issue 17's guard)
            })
            forget_config()
            say(f"building and pushing {args.images - 1} small images and one of {args.big_mib} MiB")
            references: list[str] = []
            for n in range(args.images - 1):
                tarball = build_alpine_image(work / "small.tar", SAMPLE_PACKAGES, repo_tag=f"fleet/app{n}:1",
                                             extra_files={"etc/fleet-id": f"{n}\n".encode()})
                digest = registry.push_docker_archive(tarball.path, f"fleet/app{n}", "1")
                references.append(f"{registry.address}/fleet/app{n}@{digest}")
            big = build_big_image(work / "big.tar", size_mib=args.big_mib, seed="fleet", repo_tag="fleet/big:1")
            digest = registry.push_docker_archive(big.path, "fleet/big", "1")
            big.path.unlink()
            references.append(f"{registry.address}/fleet/big@{digest}")
            big_ref = references[-1]

            say("first scans (each stores its inventory)")
            log = AccessLog(registry)
            inventories: dict[str, str] = {}
            first_big: tuple[float, float] = (0.0, 0.0)
            for n, reference in enumerate(references):
                meta: dict[str, Any] = {}
                wall, cpu = timed(lambda: meta.update(core_scan(reference, f"first-{n}", "watch")))
                inventories[reference] = meta["inventory-path"]
                if reference == big_ref:
                    first_big = (wall, cpu)
            results["first_scan_big"] = {"wall_s": first_big[0], "cpu_s": first_big[1]}

            say("the DB learns a CVE; local copies of the inventories for the bare loop")
            build_trivy_db(cache, SAMPLE_ADVISORIES + (LEARNT,), updated_at=DAY1 + timedelta(days=1),
                           next_update=DAY1 + timedelta(days=365))
            from azure.storage.blob import ContainerClient

            local: dict[str, Path] = {}
            with ContainerClient.from_container_url(azurite.container_sas_url("audits")) as container:
                for n, reference in enumerate(references):
                    local[reference] = work / f"inventory-{n}.cdx.json"
                    local[reference].write_bytes(container.download_blob(inventories[reference]).readall())

            passes: dict[str, Any] = {}
            for mode, server in (("batch", "auto"), ("batch-standalone", "off")):
                say(f"batched rescan pass, RESCAN_SERVER={server}, {args.batch} digests per message")
                os.environ.update({"RESCAN_FROM": "inventory", "RESCAN_SERVER": server})
                forget_config()
                log.mark()
                passes[mode] = batch_pass(references, mode, args.batch, azurite.container_sas_url("audits"))
                passes[mode]["registry_requests"], passes[mode]["registry_bytes"] = log.since()
            os.environ["RESCAN_SERVER"] = "auto"
            for mode in ("inventory",) if args.no_image_pass else ("inventory", "image"):
                say(f"rescan pass, RESCAN_FROM={mode}")
                os.environ["RESCAN_FROM"] = mode
                forget_config()
                log.mark()
                walls, cpus, fallbacks, big_rescan = [], [], 0, (0.0, 0.0)
                for n, reference in enumerate(references):
                    meta = {}
                    wall, cpu = timed(lambda: meta.update(core_scan(reference, f"{mode}-{n}", "rescan")))
                    walls.append(wall)
                    cpus.append(cpu)
                    fallbacks += "rescan-fallback" in meta
                    if LEARNT.vulnerability_id not in {d["VulnerabilityID"] for d in meta.get("details", [])}:
                        raise RuntimeError(f"{reference}: the rescan did not find {LEARNT.vulnerability_id}")
                    if reference == big_ref:
                        big_rescan = (wall, cpu)
                requests, served = log.since()
                passes[mode] = {**summary(walls, cpus), "registry_requests": requests, "registry_bytes": served,
                                "fallbacks": fallbacks, "big_wall_s": big_rescan[0], "big_cpu_s": big_rescan[1]}
            results["core"] = passes

            say("bare loops: trivy sbom on the same inventories, trivy image on the same images")
            options = TrivyOptions(cache_dir=cache, timeout_ms=600_000, skip_db_update=True, cache_backend="memory",
                                   offline_scan=True, insecure_registry=True, skip_java_db_update=True)
            bare: dict[str, Any] = {}
            server = LocalTrivyServer(trivy_path, cache)
            for mode in ("sbom", "sbom-server") + (() if args.no_image_pass else ("image",)):
                log.mark()
                walls, cpus, big_bare = [], [], (0.0, 0.0)
                extra: dict[str, str] = {}
                started = timed(server.start) if mode == "sbom-server" else (0.0, 0.0)
                for reference in references:
                    output = work / "bare.json"
                    if mode.startswith("sbom"):
                        with_server = replace(options, server=server.connection) if mode == "sbom-server" else options
                        command = trivy.build_sbom_command(local[reference], with_server, output)
                        extra = {"TRIVY_TOKEN": server.connection.token or ""} if mode == "sbom-server" else {}
                    else:
                        target = ScanTarget(image=parse_image_reference(reference))
                        command = trivy.build_command(target, options, output)
                    wall, cpu = timed(lambda: run_bare(command, registry, work, extra))
                    walls.append(wall)
                    cpus.append(cpu)
                    if reference == big_ref:
                        big_bare = (wall, cpu)
                if mode == "sbom-server":
                    stopped = timed(server.stop)  # the server's own CPU is counted once it is reaped
                    walls[0] += started[0] + stopped[0]
                    cpus[0] += started[1] + stopped[1]
                requests, served = log.since()
                bare[mode] = {**summary(walls, cpus), "registry_requests": requests, "registry_bytes": served,
                              "big_wall_s": big_bare[0], "big_cpu_s": big_bare[1]}
            results["bare"] = bare
    results["load_after"] = os.getloadavg()
    # The default (RESCAN_SERVER=off: see docs/performance.md) is the pass the goal and the CPU line take.
    inventory, batch, served = results["core"]["inventory"], results["core"]["batch-standalone"], results["core"]["batch"]
    image = results["core"].get("image")
    results["goals"] = {
        "registry_bytes_inventory_pass": inventory["registry_bytes"] + batch["registry_bytes"] + served["registry_bytes"],
        "big_rescan_over_first_scan": inventory["big_wall_s"] / results["first_scan_big"]["wall_s"],
        "inventory_pass_over_bare_sbom_loop": inventory["total_wall_s"] / bare["sbom"]["total_wall_s"],
        "batch_pass_over_bare_sbom_loop": batch["total_wall_s"] / bare["sbom"]["total_wall_s"],
        "batch_cpu_over_bare_sbom_loop": batch["total_cpu_s"] / bare["sbom"]["total_cpu_s"],
        "batch_server_pass_over_bare_sbom_loop": served["total_wall_s"] / bare["sbom"]["total_wall_s"],
        "batch_server_cpu_over_bare_sbom_loop": served["total_cpu_s"] / bare["sbom"]["total_cpu_s"],
        "bare_server_loop_over_bare_sbom_loop": bare["sbom-server"]["total_wall_s"] / bare["sbom"]["total_wall_s"],
        "rescan_cpu_seconds_per_image": batch["total_cpu_s"] / batch["count"],
        "image_pass_over_inventory_pass": image["total_wall_s"] / inventory["total_wall_s"] if image else None,
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_table(results: dict[str, Any]) -> None:
    core, bare, goals = results["core"], results["bare"], results["goals"]
    print(f"fleet of {results['images']} images (one of {results['big_mib']} MiB); load average before "
          f"{results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f}")
    print(f"{'pass':<26}{'wall s':>9}{'cpu s':>9}{'med wall':>10}{'med cpu':>9}{'requests':>10}{'bytes':>14}"
          f"{'big wall':>10}")
    rows = (("core batched, server", core["batch"]), ("core batched, no server", core["batch-standalone"]),
            ("core one per message", core["inventory"]), ("bare trivy sbom", bare["sbom"]),
            ("bare sbom --server", bare["sbom-server"]),
            ("core RESCAN_FROM=image", core.get("image")), ("bare trivy image", bare.get("image")))
    for label, row in [(label, row) for label, row in rows if row is not None]:
        print(f"{label:<26}{row['total_wall_s']:9.2f}{row['total_cpu_s']:9.2f}{row['median_wall_s']:10.3f}"
              f"{row['median_cpu_s']:9.3f}{row['registry_requests']:10d}{row['registry_bytes']:14d}"
              f"{row['big_wall_s']:10.3f}")
    print(f"big image first scan (core): {results['first_scan_big']['wall_s']:.2f} s wall, "
          f"{results['first_scan_big']['cpu_s']:.2f} s CPU")
    print(f"goal: 0 registry bytes in the inventory pass: {goals['registry_bytes_inventory_pass']} "
          f"({'met' if goals['registry_bytes_inventory_pass'] == 0 else 'not met'})")
    ratio = goals["big_rescan_over_first_scan"]
    print(f"goal: big image rescan <= 0.05x its first scan: {ratio:.3f}x ({'met' if ratio <= 0.05 else 'not met'})")
    ratio = goals["inventory_pass_over_bare_sbom_loop"]
    print(f"goal: inventory pass <= 1.2x the bare trivy sbom loop: {ratio:.2f}x ({'met' if ratio <= 1.2 else 'not met'})")
    ratio = goals["batch_pass_over_bare_sbom_loop"]
    print(f"goal: batched rescan pass <= 0.5x the bare trivy sbom loop: {ratio:.2f}x wall, "
          f"{goals['batch_cpu_over_bare_sbom_loop']:.2f}x CPU ({'met' if ratio <= 0.5 else 'not met'})")
    print(f"  the same with a loopback trivy server per batch (RESCAN_SERVER=auto): "
          f"{goals['batch_server_pass_over_bare_sbom_loop']:.2f}x wall, "
          f"{goals['batch_server_cpu_over_bare_sbom_loop']:.2f}x CPU")
    print(f"the floor with a trivy process per rescan: bare trivy sbom --server loop / bare trivy sbom loop: "
          f"{goals['bare_server_loop_over_bare_sbom_loop']:.2f}x")
    default = core["batch-standalone"]
    print(f"per rescan, batched (the default): {default['median_wall_s']:.3f} s wall, "
          f"{default['median_cpu_s']:.3f} s CPU ({default['messages']} messages)")
    print(f"rescan cpu-seconds per image: {goals['rescan_cpu_seconds_per_image']:.4f}")
    if goals["image_pass_over_inventory_pass"] is not None:
        print(f"image pass / inventory pass: {goals['image_pass_over_inventory_pass']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
