"""Where a fleet's inventory rescans spend their time, before and after issue 26: the rescan twin
of ``bench/profile_scan.py``.

Run from the repo root: ``.venv/bin/python bench/profile_rescan.py [--images N] [--batch B] [--top K]``.

Starts its own Azurite and registry, pushes N small images, scans each once (its inventory is
stored), lets the DB learn a CVE, then profiles with pyinstrument (wall-clock sampling, so time
waiting on trivy and on Azurite shows as the frames that wait) two rescan passes of the same N
digests through the queue trigger's rules (``handle_message``, a new ``Scanner`` per message):

* **without** the change: one message per digest, each a standalone ``trivy sbom`` (as before
  issue 26: ``RESCAN_SERVER=off``, batches of one);
* **with** it: batch messages of B digests, each batch asking one loopback ``trivy server``.

For each it prints the wall time per rescan, the K functions with the most time of their own
(pyinstrument's flat view, "self" time, in ms per rescan) and the K with the most time in total
(what they and their callees took). Nothing is asserted.
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
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

from pyinstrument import Profiler  # noqa: E402

from bench.bench_rescan import DAY1, LEARNT, SCANNER_ID, core_scan  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.config.cache import forget_config  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.queue import Delivery, handle_message, pack_batches  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402

_LINE = re.compile(r"^\s*([\d.]+)\s+(.*)$")


def rescan_pass(references: list[str], prefix: str, batch: int) -> float:
    """Every digest rescanned through ``handle_message``; the wall seconds."""
    handed_on: list[str] = []
    started = time.perf_counter()
    for number, message in enumerate(pack_batches([(r, f"{prefix}-{n}", None) for n, r in enumerate(references)],
                                                  time.time(), batch)):  # fmt: skip
        body = message.to_text()
        if batch == 1:  # one digest: the single request the timer used to send
            (request,) = message.requests()
            body = json.dumps({"headers": {"creation-time": message.headers.creation_time},
                               "payload": {"image-scan-id": request.audit_id, "image-full-name": request.image,
                                           "trigger": "rescan"}})  # fmt: skip
        handle_message(Delivery(body.encode(), f"{prefix}-m{number}", 1), Scanner(load_config_cached()),
                       max_dequeue_count=3, quarantine=handed_on.append,
                       retry_later=lambda text, delay: handed_on.append(text))  # fmt: skip
    if handed_on:
        raise SystemExit(f"{prefix}: digests retried or quarantined: {handed_on[0][:300]}")
    return time.perf_counter() - started


def top(profiler: Profiler, count: int, per: int, flat_time: str) -> list[str]:
    """The ``count`` heaviest lines of pyinstrument's flat view, in ms per rescan; for the total
    view, only what runs inside ``Scanner.scan`` (the frames that call it hold all of it)."""
    text = profiler.output_text(unicode=False, color=False, flat=True, flat_time=flat_time)  # type: ignore[arg-type]
    rows: list[tuple[float, str]] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and not line.lstrip().startswith(("Recorded", "Samples", "Duration", "Program")):
            rows.append((float(match.group(1)) * 1000 / per, match.group(2)[:110]))
    if flat_time == "total":
        scan = next((ms for ms, name in rows if name.startswith("Scanner.scan ")), None)
        rows = [(ms, name) for ms, name in rows if scan is None or ms < scan or name.startswith("Scanner.scan ")]
    return [f"{ms:9.1f} ms  {name}" for ms, name in rows[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--batch", type=int, default=50, help="digests per batch message with the change")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--interval", type=float, default=0.001, help="sampling interval, seconds")
    args = parser.parse_args(argv)
    trivy_path = Path(sys.prefix) / "bin" / "trivy"
    with tempfile.TemporaryDirectory(prefix="profile-rescan-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        build_trivy_db(cache, SAMPLE_ADVISORIES, updated_at=DAY1, next_update=DAY1 + timedelta(days=365))
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
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
                "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,
            })
            forget_config()
            print(f"[profile-rescan] {args.images} images: push, first scans", file=sys.stderr, flush=True)
            references = []
            for n in range(args.images):
                tarball = build_alpine_image(work / "small.tar", SAMPLE_PACKAGES, repo_tag=f"fleet/app{n}:1",
                                             extra_files={"etc/fleet-id": f"{n}\n".encode()})
                digest = registry.push_docker_archive(tarball.path, f"fleet/app{n}", "1")
                references.append(f"{registry.address}/fleet/app{n}@{digest}")
                core_scan(references[-1], f"first-{n}", "watch")
            build_trivy_db(cache, SAMPLE_ADVISORIES + (LEARNT,), updated_at=DAY1 + timedelta(days=1),
                           next_update=DAY1 + timedelta(days=365))
            rescan_pass(references[:2], "warm", 1)  # imports, clients, trivy's version: paid once either way
            for label, server, batch in (("without (one message per digest, standalone trivy sbom)", "off", 1),
                                         (f"with (batches of {args.batch}, one loopback trivy server each)", "auto",
                                          args.batch)):
                os.environ["RESCAN_SERVER"] = server
                forget_config()
                profiler = Profiler(interval=args.interval)
                profiler.start()
                wall = rescan_pass(references, f"p-{server}", batch)
                profiler.stop()
                print(f"\n=== {label}: {wall:.2f} s for {args.images} rescans, "
                      f"{wall * 1000 / args.images:.0f} ms per rescan ===")
                print(f"-- top {args.top} by own time (ms per rescan) --")
                print("\n".join(top(profiler, args.top, args.images, "self")))
                print(f"-- top {args.top} by total time (ms per rescan) --")
                print("\n".join(top(profiler, args.top, args.images, "total")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
