"""What the monitor loop costs, and what dedup saves.

Run from the repo root: ``.venv/bin/python bench/bench_monitor.py [--rounds N] [--tags T] [--images I]``.

* dedup: N rounds, each a request by digest scanned by trivy (``SCAN_DEDUP=false``)
  and the same request answered from that audit (``SCAN_DEDUP=true``), through
  ``Scanner.scan`` against the private registry and Azurite; medians and ratio.
  Bare ``trivy image`` of the same reference is measured too, for scale.
* watch: one repository with T tags; the first run (``WATCH_MAX_NEW_TAGS=all``:
  every tag resolved, queued and recorded) and a steady run (nothing new: the
  tag list, one HEAD per tag, one listing of the seen digests).
* rescan: I image records; one run of the rescan selection (nothing due).

Starts its own Azurite and registry under a temp dir; prints a table and
writes JSON to ``bench/out/monitor-<timestamp>.json``. Nothing is asserted.
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
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import yaml  # noqa: E402

from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.functions import on_rescan, on_watch  # noqa: E402
from scanner_core.monitor import ImageRecord, MonitorStore  # noqa: E402
from scanner_core.registry import Credentials  # noqa: E402
from scanner_core.trivy import child_environment  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES  # noqa: E402
from tests.support.monitor import TriggerQueue, push_distinct_image  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402

OUT_DIR = REPO_ROOT / "bench" / "out"
SCANNER_ID = "be5c4000-0000-4000-8000-00000000a10c"


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bare_trivy(work: Path, registry: Registry, reference: str, cache: Path) -> float:
    home = work / "bare-home"
    home.mkdir(exist_ok=True)
    credentials = Credentials(registry.address, registry.username, registry.password)
    command = [str(Path(sys.prefix) / "bin" / "trivy"), "image", "--cache-dir", str(cache), "--skip-db-update",
               "--cache-backend", "memory", "--offline-scan", "--insecure", "--format", "json",
               "--output", str(work / "bare.json"), "--quiet", "--", reference]
    return timed(lambda: subprocess.run(command, env=child_environment(credentials, home), check=True,
                                        capture_output=True, timeout=120))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    figures: dict[str, object] = {"rounds": args.rounds, "tags": args.tags, "images": args.images}
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        work = Path(tmp)
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            azurite.create_container("audits")
            cache = work / "cache"
            build_trivy_db(cache, SAMPLE_ADVISORIES)
            config_path = work / "scanner.yaml"
            registries = [{"address": registry.address, "username": registry.username,
                           "password": registry.password, "insecure": True}]
            config_path.write_text(yaml.safe_dump({"registries": registries}))
            queue = TriggerQueue(azurite.connection_string)
            for name in [n for n in os.environ if n.startswith("TRIVY_")]:
                del os.environ[name]
            os.environ.update({
                "SCANNER_IDENTIFIER": SCANNER_ID, "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url("audits"),
                "TRIVY_CONFIG_PATH": str(config_path), "TRIVY_PATH": str(Path(sys.prefix) / "bin" / "trivy"),
                "TRIVY_CACHE_DIR": str(cache), "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true",
                "LOG_FORMAT": "json", "AzureWebJobsStorage": azurite.connection_string,
                "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,
                "SCAN_QUEUE_NAME": queue.name,
            })
            import logging

            logging.disable(logging.WARNING)

            say("dedup: scanned vs answered from the earlier audit")
            digest = push_distinct_image(registry, work, "bench/app", "1.0")
            reference = f"{registry.address}/bench/app@{digest}"

            def request(dedup: bool) -> float:
                os.environ["SCAN_DEDUP"] = "true" if dedup else "false"
                scanner = Scanner(load_config())
                scanner.trivy.version()  # asked once per Scanner; not part of either path's cost
                outcome_holder = []
                seconds = timed(lambda: outcome_holder.append(scanner.scan(
                    ScanRequest(audit_id=f"b-{uuid.uuid4().hex[:10]}", requested_at=utc_now(), image=reference))))
                (outcome,) = outcome_holder
                assert outcome.succeeded and (outcome.meta.reused_from is not None) == dedup
                return seconds

            request(False)  # warm-up, and the audit later requests reuse
            scanned, reused, bare = [], [], []
            for _ in range(args.rounds):
                scanned.append(request(False))
                reused.append(request(True))
                bare.append(bare_trivy(work, registry, reference, cache))
            figures["dedup"] = {"bare_trivy_ms": median_ms(bare), "scanned_ms": median_ms(scanned),
                                "reused_ms": median_ms(reused),
                                "reused_over_scanned": round(statistics.median(reused) / statistics.median(scanned), 3),
                                "reused_over_bare_trivy": round(statistics.median(reused) / statistics.median(bare), 3)}

            say(f"watch: a repository with {args.tags} tags")
            for i in range(args.tags):  # one at a time: the registry helper's push is not thread-safe
                push_distinct_image(registry, work, "bench/many", f"1.{i}")
            config_path.write_text(yaml.safe_dump({"registries": registries,
                                                   "watch": [{"repository": f"{registry.address}/bench/many"}]}))
            os.environ["WATCH_MAX_NEW_TAGS"] = "all"
            first = timed(lambda: on_watch(None, REPO_ROOT))
            queued = len(queue.take())
            steady = [timed(lambda: on_watch(None, REPO_ROOT)) for _ in range(3)]
            figures["watch"] = {"first_run_s": round(first, 2), "queued": queued,
                                "steady_run_ms": median_ms(steady),
                                "steady_ms_per_tag": round(statistics.median(steady) * 1000 / args.tags, 2)}

            say(f"rescan: {args.images} image records")
            store = MonitorStore(azurite.container_sas_url("audits"), SCANNER_ID.replace("-", "")[:8])
            now = int(time.time())

            def add(i: int) -> None:
                store.remember(ImageRecord(f"{registry.address}/fleet/app{i % 50}", f"sha256:{i:064x}", f"a{i}",
                                           "f", now, now, now, "1.0", "2026-11-01T00:00:00Z", "k"))

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(add, range(args.images)))
            runs = [timed(lambda: on_rescan(None, REPO_ROOT)) for _ in range(3)]
            figures["rescan"] = {"run_ms": median_ms(runs),
                                 "ms_per_image": round(statistics.median(runs) * 1000 / (args.images + 1), 3)}
            store.close()
            queue.close()
    print(json.dumps(figures, indent=2))
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / f"monitor-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
