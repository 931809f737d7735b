"""Fleet queries (issue 24, item 3): the first page of a CVE query and of a package query
as the fleet grows, against Azurite's Table service.

Per size N (``--images 1000,10000``) a fresh Azurite is seeded through the product's
writer (``QueryTables.record_new_images``: transactions of at most 100 per partition) with
N images ``bench.example/team{i % 50}/app{i}:1.0``, each with ``--findings`` vulnerabilities
(CVE-1PCT in 1 % of the images, CVE-10PCT in 10 %, the rest drawn from a pool of 1,000 ids: images share most of their CVEs, as images built on a few base images do)
and ``--packages`` packages (``log4j-core`` in 5 % of the images at 2.14.1 or 2.17.1, the
rest drawn from a pool of 500 names). Then it times, ``--runs`` times each, the first page
(limit 50) of: the CVE in 1 % and in 10 % of the fleet, ``log4j-core`` with
``version=<2.17.0``; and the follow-up's write of one image (``record``) when its rescan found
the same as before and when one vulnerability was fixed. Prints median and p95 beside the
goal: a first page ≤ 1 s at 100,000 images (issue 24).

Run from the repo root: ``.venv/bin/python bench/bench_fleet_queries.py --images 1000 [--json PATH]``
(10,000 images: Azurite drops connections after ~9,000; see docs/performance.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from scanner_core.fleet_queries import (  # noqa: E402
    InstalledPackage, QueryTables, images_with_package, images_with_vulnerability, parse_version_range,
)
from scanner_core.config import Settings  # noqa: E402
from scanner_core.models import AuditMeta, AuditResult, Finding  # noqa: E402
from scanner_core.errors import StorageError  # noqa: E402
from scanner_core.storage import forget_tables, resolve_account_connection  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402

GOAL_FIRST_PAGE_S = 1.0
SEEDED_AT = 1_790_000_000
BENCH_SETTINGS = Settings.model_validate({"SCANNER_IDENTIFIER": "b0b0b0b0-0000-4000-8000-000000000000"})  # names the tables


def meta_of(index: int, audit_id: str, at: int) -> AuditMeta:
    return AuditMeta(audit_id=audit_id, scanner_id="bench", scanner_version="bench", timestamp=at, requested_at=at,
                     audit_result=AuditResult.SUCCEEDED, image=f"bench.example/team{index % 50}/app{index}:1.0",
                     image_digest="sha256:" + f"{index:064x}", inventory_path=f"trivy-bench/{audit_id}/sbom.cdx.json")


def image_of(index: int, findings: int, packages: int, rng: random.Random) -> tuple[list[Finding], list[InstalledPackage]]:
    ids = {f"CVE-2099-{rng.randrange(1000):05d}" for _ in range(findings)}
    if index % 100 == 0:
        ids.add("CVE-1PCT")
    if index % 10 == 0:
        ids.add("CVE-10PCT")
    found = [Finding(vulnerability_id=i, pkg_name=f"pkg{hash(i) % 500}", installed_version="1.0", fixed_version="1.1",
                     severity=rng.choice(("CRITICAL", "HIGH", "MEDIUM", "LOW")), target="bench")
             for i in sorted(ids)]  # fmt: skip
    names = {f"pkg{rng.randrange(500)}" for _ in range(packages)}
    installed = [InstalledPackage(type="npm", name=n, version=f"1.{rng.randrange(20)}.0") for n in sorted(names)]
    if index % 20 == 0:
        installed.append(InstalledPackage(type="maven", name="log4j-core", group="org.apache.logging.log4j",
                                          version="2.14.1" if index % 40 == 0 else "2.17.1"))  # fmt: skip
    return found, installed


def seed(tables: QueryTables, chunk: list) -> int:
    """``record_new_images``; on a failure, the chunk again one transaction at a time (upserts are
    idempotent): Azurite drops connections under concurrent transactions once its table is big."""
    try:
        return tables.record_new_images(chunk)
    except StorageError as error:
        print(f"  seeding: {error}; this chunk again, one transaction at a time", flush=True)
        return tables.record_new_images(chunk, side_by_side=False)


def timed(action: Callable[[], object], runs: int) -> dict[str, float]:
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        walls.append(time.perf_counter() - start)
    walls.sort()
    return {"median_s": statistics.median(walls), "p95_s": walls[min(len(walls) - 1, int(len(walls) * 0.95))]}


def one_size(images: int, findings: int, packages: int, runs: int, work: Path) -> dict[str, object]:
    rng = random.Random(images)
    with Azurite(work / f"azurite-{images}") as azurite:
        forget_tables()
        tables = QueryTables(resolve_account_connection("Bench", {"Bench": azurite.connection_string}), BENCH_SETTINGS)
        start = time.perf_counter()
        written = 0
        for first in range(0, images, 1000):
            chunk = [(meta_of(i, f"seed-{i}", SEEDED_AT), *image_of(i, findings, packages, rng))
                     for i in range(first, min(images, first + 1000))]  # fmt: skip
            written += seed(tables, chunk)
        seed_s = time.perf_counter() - start
        below = parse_version_range("<2.17.0")
        figures: dict[str, object] = {"images": images, "entities": written, "seed_s": round(seed_s, 1)}
        pages = {
            "cve_1pct_first_page": lambda: images_with_vulnerability(tables, "CVE-1PCT", 50, None),
            "cve_10pct_first_page": lambda: images_with_vulnerability(tables, "CVE-10PCT", 50, None),
            "package_first_page": lambda: images_with_package(tables, "log4j-core", 50, None, versions=below),
        }
        for name, action in pages.items():
            figures[name] = timed(action, runs)
            figures[name]["rows"] = len(action().rows)  # type: ignore[index]
        found, installed = image_of(1, findings, packages, random.Random(1))
        tables.record(meta_of(1, "seed-1", SEEDED_AT), lambda: found, lambda: installed)  # the reverse index too
        counter = iter(range(1, 10_000))

        def same() -> object:
            n = next(counter)
            return tables.record(meta_of(1, f"same-{n}", SEEDED_AT + n), lambda: found, lambda: installed)

        def fixed_one() -> object:
            n = next(counter)
            return tables.record(meta_of(1, f"fix-{n}", SEEDED_AT + n), lambda: found[n % 2:], lambda: installed)

        figures["record_unchanged"] = timed(same, runs)
        figures["record_one_changed"] = timed(fixed_one, runs)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--findings", type=int, default=8, help="vulnerabilities per image (besides the two probes)")
    parser.add_argument("--packages", type=int, default=8, help="packages per image (besides log4j-core)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-queries-") as work:
        for size in (int(s) for s in args.images.split(",")):
            figures = one_size(size, args.findings, args.packages, args.runs, Path(work))
            results.append(figures)
            print(f"images={size}: seeded {figures['entities']} entities in {figures['seed_s']} s")
            for name in ("cve_1pct_first_page", "cve_10pct_first_page", "package_first_page",
                         "record_unchanged", "record_one_changed"):  # fmt: skip
                f = figures[name]
                goal = f"  (goal: first page <= {GOAL_FIRST_PAGE_S:.1f} s at 100,000 images)" if "page" in name else ""
                rows = f"  rows={f['rows']}" if "rows" in f else ""
                print(f"  {name:<22} median {f['median_s'] * 1000:8.1f} ms  p95 {f['p95_s'] * 1000:8.1f} ms{rows}{goal}")
    if len(results) > 1:
        small, big = results[0], results[-1]
        for name in ("cve_1pct_first_page", "cve_10pct_first_page", "package_first_page"):
            ratio = big[name]["median_s"] / max(small[name]["median_s"], 1e-9)  # type: ignore[index]
            print(f"{name}: {big['images']} vs {small['images']} images: x{ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
