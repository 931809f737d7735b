"""The fleet's reads from the images' current state (issue 24) against the old walks of the
audit index, at several fleet sizes, on one fresh Azurite.

Run from the repo root:
``.venv/bin/python -u bench/bench_fleet_state.py [--images 1000,10000,100000] [--old-max 200] [--rounds 20]
[--orders kev]``.

Per size N (images in repositories of 100 tags, 10 audits per image):

* the **state** is seeded through the product's own entity writer (``ImageState.from_meta`` →
  ``entity``), one batch transaction per 100 entities of a partition, 16 at a time; an image's
  state is its newest audit (the 9 older ones are no-ops for ``FleetState.record`` by design,
  so they are not sent). The **index** (the old path) gets all 10 audits through
  ``AuditIndex.record`` up to ``--old-max`` images (10 × N index rows; beyond, seeding takes too
  long here: the old figures are extrapolated linearly, as the rows say).
* read paths, median and p95 of ``--rounds``: the summary's totals (new: the snapshot, one point
  read; old: ``AuditIndex.totals``, every row), a page of 50 (new: ``GET /api/images``' query, all
  and filtered by ``status=failed``; old: the index's first page), a verdict (new: the state's
  point read; old: the walk of the repository's rows), the metrics scrape (new: ``read_snapshot``
  and the exposition with ``--max-images`` per-image series: the fleet snapshot and the audit
  tally, a point read each, and one bounded query of the newest images; old: the walk of every
  index row it replaced, without rendering), the sorted pages (``sort=`` each order of ``--orders``,
  and the first with a filter: their tables seeded with ``fleet_order``'s own row and key functions,
  100 entities per transaction; each order's table takes as long to seed on Azurite as the state,
  so at 100,000 images pass one order: the others have the same shape and cost; old: the dashboard
  sorted the newest 1,000 audits in the browser), the snapshot's walk (the heartbeat timer's job,
  once), the critical path's extra cost (``FleetState.record`` of a newer audit beside
  ``AuditIndex.record`` as the ship stage runs them, against the index alone, when the index is
  seeded) and the order tables' sync that follows the state's write (off the critical path).

Nothing is asserted; the goals (issue 24, item 6) are printed beside the figures.
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
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from azure.core.exceptions import ServiceResponseError  # noqa: E402
from azure.storage.blob import ContainerClient  # noqa: E402

from scanner_core.io_pool import io_pool  # noqa: E402
from scanner_core.metrics import read_snapshot, render_prometheus  # noqa: E402
from scanner_core.models import AuditMeta, AuditResult  # noqa: E402
from scanner_core.storage import (  # noqa: E402
    ORDERS, AuditIndex, FleetOrder, FleetState, ImageState, fleet_table, page_images, read_fleet_snapshot,
    resolve_account_connection, take_snapshot, tally_audits)
from scanner_core.storage.fleet_order import ORDER_PARTITION, POINTER_PREFIX, image_hash, order_row  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402

TAGS_PER_REPOSITORY = 100
AUDITS_PER_IMAGE = 10
BASE = 1_790_000_000
GOALS = {"totals": "≤ 500 ms at 100,000", "page": "≤ 300 ms", "verdict": "≤ 50 ms", "critical": "≤ 1 round trip",
         "metrics": "≤ 5 s; 1,000 ±20 %"}


def meta(image: int, audit: int) -> AuditMeta:
    """Audit ``audit`` (0 oldest) of image ``image``: a third fail, some have KEV findings."""
    critical = (image + audit) % 3
    requested = BASE + audit * 86_400 + image
    return AuditMeta(
        audit_id=f"i{image}-a{audit}", scanner_id="bench", scanner_version="bench", timestamp=requested + 30,
        requested_at=requested, audit_result=AuditResult.SUCCEEDED, trigger="rescan",
        image=f"registry.example.com/team/app-{image // TAGS_PER_REPOSITORY}:v{image % TAGS_PER_REPOSITORY}",
        image_digest=f"sha256:{image:064x}", scan_status="failed" if critical else "passed",
        vulnerabilities={"critical": critical, "high": 2, "medium": 1, "low": 0, "unknown": 0, "total": critical + 3},
        kev=image % 7 == 0, epss_max=(image % 100) / 100,
    )


def folder(m: AuditMeta) -> str:
    return f"trivy-bench000/{m.requested_at}-{m.audit_id}"


def seed_state(state: FleetState, images: int) -> float:
    started = time.perf_counter()

    def partition(first: int) -> None:
        operations = []
        for image in range(first, min(first + TAGS_PER_REPOSITORY, images)):
            latest = ImageState.from_meta(meta(image, AUDITS_PER_IMAGE - 1), "")
            assert latest is not None
            latest = latest.model_copy(update={"folder": folder(meta(image, AUDITS_PER_IMAGE - 1))})
            operations += [("upsert", latest.entity(key)) for key in latest.row_keys()]
        for start in range(0, len(operations), 100):
            for attempt in range(3):  # a reset connection under load: upserts are idempotent, send again
                try:
                    state.table.submit_transaction(operations[start:start + 100])
                    break
                except ServiceResponseError:
                    if attempt == 2:
                        raise

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(partition, range(0, images, TAGS_PER_REPOSITORY)))
    return time.perf_counter() - started


def seed_order(state: FleetState, images: int, orders: list[str]) -> float:
    """The sorted pages' tables as ``FleetOrder.sync`` leaves them (its own key and row functions),
    written 100 entities per transaction: a sync per image (9 round trips) is too slow to seed
    100,000 images here; ``sync`` itself is timed below."""
    assert state.order is not None
    started = time.perf_counter()

    def chunk(args: tuple[str, int]) -> None:
        order, first = args
        operations = []
        for image in range(first, min(first + 50, images)):
            latest = ImageState.from_meta(meta(image, AUDITS_PER_IMAGE - 1), folder(meta(image, AUDITS_PER_IMAGE - 1)))
            assert latest is not None
            key = latest.row_keys()[0]  # the tag's entity: the listed one
            row = order_row(order, latest, latest.partition, key)
            body = {k: v for k, v in latest.entity(key).items() if k not in ("PartitionKey", "RowKey")}
            operations += [("upsert", {**body, "PartitionKey": ORDER_PARTITION, "RowKey": row}),
                           ("upsert", {"PartitionKey": ORDER_PARTITION, "RowKey": POINTER_PREFIX + image_hash(
                               latest.partition, key), "row": row, "content": "seeded", "state_row": key})]
        for attempt in range(3):
            try:
                state.order.table(order).submit_transaction(operations)
                break
            except ServiceResponseError:
                if attempt == 2:
                    raise

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(chunk, ((order, first) for order in orders for first in range(0, images, 50))))
    return time.perf_counter() - started


def seed_index(index: AuditIndex, images: int) -> float:
    started = time.perf_counter()

    def one(item: tuple[int, int]) -> None:
        m = meta(*item)
        index.record(m, folder(m), known_pointer=None)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, ((i, a) for i in range(images) for a in range(AUDITS_PER_IMAGE))))
    return time.perf_counter() - started


def measure(action: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def row(name: str, new: tuple[float, float] | None, old: tuple[float, float] | None, goal: str, note: str = "") -> None:
    def cell(figure: tuple[float, float] | None) -> str:
        return f"{figure[0]:9.1f} {figure[1]:9.1f}" if figure else f"{'-':>9} {'-':>9}"

    ratio = f"{old[0] / new[0]:8.1f}x" if new and old and new[0] else f"{'':>9}"
    print(f"  {name:<34} {cell(new)}   {cell(old)} {ratio}  {goal:<22} {note}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default="1000,10000")
    parser.add_argument("--old-max", type=int, default=10_000, help="largest fleet the old index is seeded for")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-images", type=int, default=10_000, help="METRICS_MAX_IMAGES for the scrape")
    parser.add_argument("--no-sorted", dest="sorted", action="store_false",
                        help="skip the sorted pages (their tables take as long again to seed)")
    parser.add_argument("--orders", default=",".join(ORDERS),
                        help="the orders whose tables are seeded and paged (each as long to seed as the state: "
                             "at 100,000 images on Azurite, one, e.g. kev; the others have the same shape)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.images.split(",")]
    with tempfile.TemporaryDirectory() as temp, Azurite(Path(temp) / "azurite") as azurite:
        connection = resolve_account_connection("Bench", {"Bench": azurite.connection_string})
        old_per_audit: dict[str, float] = {}
        for images in sizes:
            run = uuid.uuid4().hex[:8]
            state = FleetState(fleet_table(connection, f"bench{run}images"), order=FleetOrder(
                lambda order, run=run: fleet_table(connection, f"bench{run}by{order}")))
            seeded = seed_state(state, images)
            print(f"\n{images:,} images, {images * AUDITS_PER_IMAGE:,} audits: state seeded in {seeded:.1f} s "
                  f"({2 * images:,} entities)")
            orders = [o for o in args.orders.split(",") if o] if args.sorted else []
            if orders:
                print(f"  order tables seeded in {seed_order(state, images, orders):.1f} s "
                      f"({', '.join(orders)}: {len(orders)} tables of {2 * images:,} entities)")
            name = f"bench-{uuid.uuid4().hex[:8]}"
            azurite.create_container(name)
            index = None
            if images <= args.old_max:
                index = AuditIndex(ContainerClient.from_container_url(azurite.container_sas_url(name)), "bench000")
                print(f"  index seeded in {seed_index(index, images):.1f} s ({images * AUDITS_PER_IMAGE:,} audits)")
            walk_started = time.perf_counter()
            take_snapshot(state, newest=args.max_images)
            walk = time.perf_counter() - walk_started
            tally_started = time.perf_counter()
            tally = tally_audits(state, index.rows() if index else iter(()))
            tally_seconds = time.perf_counter() - tally_started
            rounds, old_rounds = args.rounds, max(3, args.rounds // 5)
            repository = f"registry.example.com/team/app-{(images - 1) // TAGS_PER_REPOSITORY}"
            tag = f"v{(images - 1) % TAGS_PER_REPOSITORY}"
            print(f"  {'path (ms)':<34} {'new med':>9} {'new p95':>9}   {'old med':>9} {'old p95':>9} {'old/new':>9}  goal")
            new_totals = measure(lambda: read_fleet_snapshot(state), rounds)
            old_totals = measure(index.totals, old_rounds) if index else None
            if old_totals:
                old_per_audit["totals"] = old_totals[0] / (images * AUDITS_PER_IMAGE)
            extrapolated = "" if old_totals else (
                f"old extrapolated: {old_per_audit['totals'] * images * AUDITS_PER_IMAGE / 1000:.1f} s"
                if "totals" in old_per_audit else "old: not seeded in this run (--old-max)")
            row("summary totals", new_totals, old_totals, GOALS["totals"], extrapolated)
            row("page of 50 (all)", measure(lambda: page_images(state, 50), rounds),
                measure(lambda: index.page(50), rounds) if index else None, GOALS["page"])
            row("page of 50 (status=failed)", measure(lambda: page_images(state, 50, category="failed"), rounds),
                None, GOALS["page"], "old: no such filter (the dashboard filtered the newest 1,000 audits)")
            if orders:
                for order in orders:
                    row(f"page of 50 (sort={order})", measure(lambda: page_images(state, 50, sort=order), rounds),
                        None, GOALS["page"], "old: the dashboard sorted the newest 1,000 audits in the browser")
                row(f"page of 50 (sort={orders[0]}, status=failed)",
                    measure(lambda: page_images(state, 50, sort=orders[0], category="failed"), rounds), None,
                    GOALS["page"])
            row("page of 50 (one repository)", measure(lambda: page_images(state, 50, repository=repository), rounds),
                measure(lambda: index.repository_page(repository, 50), rounds) if index else None, GOALS["page"])
            old_verdict = None
            if index:
                old_verdict = measure(lambda: next(r for r in index.repository_rows(repository) if r.tag == tag),
                                      old_rounds)
            row("verdict (the image's state)", measure(lambda: state.get(repository, tag), rounds), old_verdict,
                GOALS["verdict"], "old: walk of the repository's rows")
            url = azurite.container_sas_url(name)

            def scrape() -> None:
                snapshot = read_snapshot(url, "bench000", None, None, fleet=state, max_images=args.max_images)
                render_prometheus(snapshot)

            scrape_rounds = max(3, rounds // 2)
            row(f"metrics scrape ({min(images, args.max_images):,} series)", measure(scrape, scrape_rounds),
                measure(lambda: sum(1 for _ in index.rows()), old_rounds) if index else None, GOALS["metrics"],
                "old: the index walk alone")
            print(f"  snapshot walk (heartbeat timer, once): {walk * 1000:.0f} ms for {images:,} images; "
                  f"audit tally (first, {tally.rows_read:,} rows): {tally_seconds * 1000:.0f} ms")
            if index:
                counter = iter(range(10**9))

                def both() -> None:
                    n = next(counter)
                    m = meta(n % images, AUDITS_PER_IMAGE + n)
                    pending = io_pool().submit(state.record, m, folder(m))
                    index.record(m, folder(m), known_pointer=None)
                    pending.result()

                def index_only() -> None:
                    n = next(counter)
                    m = meta(n % images, AUDITS_PER_IMAGE + 10_000 + n)
                    index.record(m, folder(m), known_pointer=None)

                def state_only() -> None:
                    n = next(counter)
                    m = meta(n % images, AUDITS_PER_IMAGE + 20_000 + n)
                    state.record(m, folder(m))

                alone, together, writes = measure(index_only, rounds), measure(both, rounds), measure(state_only, rounds)
                print(f"  critical path: index alone {alone[0]:.1f} ms, index + state side by side {together[0]:.1f} "
                      f"ms (+{together[0] - alone[0]:.1f} ms); the state's write alone {writes[0]:.1f} ms "
                      f"(a query and a transaction)")
            if args.sorted:
                numbers = iter(range(10**9))

                def write_state() -> None:
                    n = next(numbers)
                    m = meta(n % images, AUDITS_PER_IMAGE + 30_000 + n)
                    state.record(m, folder(m))

                def sync() -> None:
                    n = next(numbers)
                    m = meta(n % images, AUDITS_PER_IMAGE + 40_000 + n)
                    if state.record(m, folder(m)):
                        state.sync_order_of(m)

                written, synced = measure(write_state, rounds), measure(sync, rounds)
                print(f"  the state's write alone {written[0]:.1f} ms; then the order tables' sync (after the "
                      f"state, off the critical path): +{synced[0] - written[0]:.1f} ms median "
                      f"(p95 of both {synced[1]:.1f} ms; the tag's and the digest's entities, {len(ORDERS)} orders)")


if __name__ == "__main__":
    main()
