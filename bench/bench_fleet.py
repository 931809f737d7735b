"""One DB download per fleet: N cold instances, as N processes with their own
cache dirs, against Azurite and the local registry serving the DB as trivy-db's
OCI artifact. Counts the registry's downloads of the DB layer (its access log)
and times each cold instance's first scan (``python -m scanner_core scan``,
which gets its DB first), with ``DB_SNAPSHOT=none`` (every instance asks the
registry) and with ``DB_SNAPSHOT=blob`` (the refresh timer downloads once and
publishes; instances restore from Blob Storage).

Run from the repo root: ``.venv/bin/python bench/bench_fleet.py [--instances N] [--json PATH]``.
The DB holds the large fixture's advisories too (tens of MB), so that moving
it costs something; the real one is ~80 MB compressed, ~700 MB on disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image, large_fixture  # noqa: E402
from tests.support.oci_db import db_layer, publish_trivy_db  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.bolt import write_bolt  # noqa: E402
from tests.support.trivy_db import build_trivy_db, db_buckets  # noqa: E402

REPOSITORY = "mirror/trivy-db"
SCANNER_ID = "f1ee7000-0000-4000-8000-000000000001"
TIMER = (
    "from pathlib import Path\nfrom azure.functions.timer import TimerRequest\n"
    "from scanner_core.functions import handlers\nhandlers.on_db_refresh(TimerRequest(past_due=False), Path('.'))\n"
)


def build_padded_db(cache: Path, advisories: list, updated_at: datetime, padding_mib: int) -> None:
    """The fixture DB plus a bucket of random bytes: a DB of realistic weight (the
    real one is ~80 MB compressed), whose findings are still the fixture's."""
    build_trivy_db(cache, advisories, updated_at=updated_at, next_update=updated_at + timedelta(hours=6))
    buckets = db_buckets(advisories)
    buckets[b"bench-padding"] = {
        f"{index:06d}".encode(): hashlib.shake_256(f"padding-{index}".encode()).digest(1024 * 1024)
        for index in range(padding_mib)
    }
    write_bolt(cache / "db" / "trivy.db", buckets)


def say(text: str) -> None:
    print(f"[fleet] {text}", file=sys.stderr, flush=True)


def run(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return time.perf_counter() - started


def fleet(instances: int, image: Path, env: dict[str, str], work: Path, label: str) -> list[float]:
    """N cold instances at once (a burst), each scanning once with an empty cache dir."""

    def instance(index: int) -> float:
        own = {**env, "TRIVY_CACHE_DIR": str(work / f"{label}-{index}")}
        command = [sys.executable, "-m", "scanner_core", "scan", "--input", str(image), "--audit-id", f"{label}-{index}"]
        return run(command, own)

    with ThreadPoolExecutor(max_workers=instances) as pool:
        return list(pool.map(instance, range(instances)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--packages", type=int, default=3000, help="large-fixture packages in the DB (default 3000)")
    parser.add_argument("--padding-mib", type=int, default=64,
                        help="incompressible MiB added to the DB in a bucket trivy never reads (default 64)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    trivy = Path(sys.prefix) / "bin" / "trivy"
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        with Azurite(work / "azurite") as azurite, Registry(work / "registry", access_log=True) as registry:
            say("building and publishing the DB")
            updated_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
            advisories = [*SAMPLE_ADVISORIES, *large_fixture(args.packages, 3)[1]]
            build_padded_db(work / "source", advisories, updated_at, args.padding_mib)
            layer = db_layer(work / "source" / "db")
            digest = "sha256:" + hashlib.sha256(layer).hexdigest()
            publish_trivy_db(registry.address, REPOSITORY, "2", work / "source" / "db",
                             username=registry.username, password=registry.password)  # fmt: skip
            image = build_alpine_image(work / "sample.tar", SAMPLE_PACKAGES).path
            azurite.create_container("audits")
            config = work / "scanner.yaml"
            config.write_text(json.dumps({"registries": [{"address": registry.address, "username": registry.username,
                                                          "password": registry.password, "insecure": True}]}))  # fmt: skip
            env = {name: value for name, value in os.environ.items() if not name.startswith(("TRIVY_", "DB_SNAPSHOT"))}
            env.update({
                "SCANNER_IDENTIFIER": SCANNER_ID, "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url("audits"),
                "TRIVY_CONFIG_PATH": str(config), "TRIVY_PATH": str(trivy), "TRIVY_SKIP_DB_UPDATE": "false",
                "TRIVY_OFFLINE_SCAN": "true", "TRIVY_DB_REPOSITORY": f"{registry.address}/{REPOSITORY}:2",
                "TRIVY_TIMEOUT": "600000", "LOG_FORMAT": "plain-text",
            })  # fmt: skip

            say(f"DB_SNAPSHOT=none: {args.instances} cold instances")
            before = registry.blob_downloads(REPOSITORY, digest)
            from_registry = fleet(args.instances, image, {**env, "DB_SNAPSHOT": "none"}, work, "registry")
            registry_downloads = registry.blob_downloads(REPOSITORY, digest) - before

            say("DB_SNAPSHOT=blob: the refresh timer, then the same burst")
            before = registry.blob_downloads(REPOSITORY, digest)
            timer_seconds = run([sys.executable, "-c", TIMER],
                                {**env, "DB_SNAPSHOT": "blob", "TRIVY_CACHE_DIR": str(work / "timer")})  # fmt: skip
            from_snapshot = fleet(args.instances, image, {**env, "DB_SNAPSHOT": "blob"}, work, "snapshot")
            snapshot_downloads = registry.blob_downloads(REPOSITORY, digest) - before
    result: dict[str, Any] = {
        "instances": args.instances,
        "db_layer_bytes": len(layer),
        "registry_downloads_without_snapshot": registry_downloads,
        "registry_downloads_with_snapshot": snapshot_downloads,
        "timer_refresh_and_publish_seconds": timer_seconds,
        "first_scan_seconds_from_registry": from_registry,
        "first_scan_seconds_from_snapshot": from_snapshot,
        "first_scan_median_from_registry": statistics.median(from_registry),
        "first_scan_median_from_snapshot": statistics.median(from_snapshot),
    }
    print(f"DB layer: {len(layer) / 2**20:.1f} MiB compressed; {args.instances} cold instances at once")
    print(f"registry downloads of the DB, DB_SNAPSHOT=none: {registry_downloads}")
    print(f"registry downloads of the DB, DB_SNAPSHOT=blob: {snapshot_downloads} (the timer's; it took {timer_seconds:.2f} s)")
    print(f"first scan of a cold instance, median: from the registry {result['first_scan_median_from_registry']:.2f} s, "
          f"from the snapshot {result['first_scan_median_from_snapshot']:.2f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
