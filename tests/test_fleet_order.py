"""Issue 24, item 2: ``GET /api/images?sort=severity|kev|epss|age|recent`` pages the fleet in that
order from the order tables (``storage/fleet_order.py``), which follow every change of an
image's state (a newer audit, an approval), converge under concurrent writers, and are
rebuilt by ``reindex``. Real Azurite Table service; metas made here, written through the
product's writers as the ship stage runs them (``record``, then ``sync_order_of``)."""

from __future__ import annotations

import time
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor

import pytest

from scanner_core.config import load_config
from scanner_core.functions import fleet_images
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import ORDERS, FleetState, fleet_state_of
from tests.test_http_api import answer, error_of, http, make_api

NOW = int(time.time())
REPOSITORIES = ("registry.example/team/app", "registry.example:5000/a_b/c-d.e/f")


def meta(n: int, *, critical: int, kev: int = 0, epss: float | None = None, tag: str | None = None,
         result: AuditResult = AuditResult.SUCCEEDED, at: int | None = None) -> AuditMeta:
    ok = result is AuditResult.SUCCEEDED
    requested = at if at is not None else NOW - 1000 + n
    return AuditMeta(
        audit_id=f"o-{n}-{requested}", scanner_id="s", scanner_version="t", timestamp=requested + 1,
        requested_at=requested, audit_result=result, image=f"{REPOSITORIES[n % 2]}:{tag or f'v{n}'}",
        image_digest=f"sha256:{n:064x}", scan_status=("failed" if critical else "passed") if ok else None,
        vulnerabilities={"critical": critical, "high": n % 4, "medium": 1, "low": 0, "unknown": 0,
                         "total": critical + n % 4 + 1} if ok else None,
        kev=kev if ok else None, epss_max=epss if ok else None, failure_reason=None if ok else "timeout",
    )


def ship(state: FleetState, m: AuditMeta) -> None:
    """As the ship stage does (stages/ship.py ``record_state``): the state, then its order rows."""
    if state.record(m, f"trivy-x/{m.audit_id}"):
        state.sync_order_of(m)


@pytest.fixture
def ordered(scanner_env, azurite) -> FleetState:
    state = fleet_state_of(load_config().settings)
    metas = [meta(n, critical=n % 3, kev=n % 4 == 0, epss=None if n % 5 == 0 else (n % 7) / 7) for n in range(14)]
    metas.append(meta(20, critical=0, result=AuditResult.AUDIT_FAILED))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: ship(state, m), metas))
    return state


def listing(api, **params: str) -> list[dict]:
    found, cursor = [], None
    while True:
        page = answer(fleet_images(http("GET", "images", params=params | ({"cursor": cursor} if cursor else {})), api), 200)
        found += page["images"]
        cursor = page["next-cursor"]
        if cursor is None:
            return found


def order_key(order: str):
    """The order as the docs state it (ties: any order)."""
    def severity(i: dict) -> tuple:
        v = i["vulnerabilities"]
        return (1,) if v is None else (0, *(-v[s] for s in ("critical", "high", "medium", "low", "unknown")))

    keys = {
        "severity": severity,
        "kev": lambda i: ((1,) if i["vulnerabilities"] is None else (0, -(i["kev"] or 0))) + severity(i),
        "epss": lambda i: ((1,) if i["epss-max"] is None or i["vulnerabilities"] is None else (0, -i["epss-max"]))
        + severity(i),
        "age": lambda i: (i["scanned-at"],),
        "recent": lambda i: (-datetime.fromisoformat(i["requested-at"].replace("Z", "+00:00")).timestamp(),),
    }
    return keys[order]


def in_order(got: list[dict], everything: list[dict], order: str) -> bool:
    key = order_key(order)
    return ({i["audit-id"] for i in got} == {i["audit-id"] for i in everything}
            and [key(i) for i in got] == sorted(key(i) for i in everything))


def test_each_order_pages_the_fleet_in_that_order_and_follows_changes(ordered, azurite):
    api = make_api(azurite)
    everything = listing(api, limit="50")
    assert len(everything) == 15
    for order in ORDERS:
        got = listing(api, sort=order, limit="4")
        assert len(got) == 15 and in_order(got, everything, order), (order, [i["audit-id"] for i in got])
    assert listing(api, sort="severity", limit="4")[-1]["status"] == "audit-failed"

    # a newer audit of one image moves it (and leaves no row behind); an approval is filterable
    ship(ordered, meta(3, critical=9, kev=5, epss=0.99, tag="v3", at=NOW))
    for order in ("severity", "kev", "epss"):
        got = listing(api, sort=order, limit="50")
        assert len(got) == 15 and got[0]["tag"] == "v3" and got[0]["vulnerabilities"]["critical"] == 9, order
    assert listing(api, sort="age", limit="50")[-1]["tag"] == "v3"
    assert listing(api, sort="recent", limit="50")[0]["tag"] == "v3"
    ordered.approval_changed(REPOSITORIES[1], f"sha256:{3:064x}", "ap-3", "approved")
    approved = listing(api, sort="kev", approval="approved")
    assert [(i["tag"], i["approval"]) for i in approved] == [("v3", "approved")]
    mine = listing(api, sort="severity", repository=REPOSITORIES[1], status="failed")
    assert mine and {i["repository"] for i in mine} == {REPOSITORIES[1]} and {i["status"] for i in mine} == {"failed"}


def test_a_cursor_belongs_to_its_order_and_bad_sorts_are_a_clear_400(ordered, azurite):
    api = make_api(azurite)
    page = answer(fleet_images(http("GET", "images", params={"sort": "kev", "limit": "2"}), api), 200)
    assert "sort=kev" in page["links"]["next"]
    for params in ({"sort": "epss", "cursor": page["next-cursor"]}, {"cursor": page["next-cursor"]}):
        error = error_of(fleet_images(http("GET", "images", params=params), api), 400)
        assert error["field"] == "cursor", error
    error = error_of(fleet_images(http("GET", "images", params={"sort": "name"}), api), 400)
    assert error["field"] == "sort" and "severity, kev, epss, age, recent" in error["message"]


def test_concurrent_audits_of_one_image_leave_one_row_per_order_on_the_newest(scanner_env, azurite):
    state = fleet_state_of(load_config().settings)
    audits = [meta(7, critical=n % 5, kev=n % 3, epss=n / 10, tag="same", at=NOW - 100 + n) for n in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda m: ship(state, m), audits))
    for order in ORDERS:
        rows = list(state.order.table(order).query_entities("RowKey lt '~'"))
        assert [r["audit_id"] for r in rows] == [audits[-1].audit_id], order


def test_reindex_rebuilds_the_order_from_the_state(ordered, azurite):
    for order in ORDERS:  # as after an upgrade: the state is there, its order tables empty
        table = ordered.order.table(order)
        for entity in list(table.query_entities("PartitionKey eq 'o'")):
            table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    api = make_api(azurite)
    assert listing(api, sort="kev") == []
    assert ordered.sync_every_order() == 15 * len(ORDERS)
    assert ordered.sync_every_order() == 0  # idempotent: nothing changed, nothing written
    assert in_order(listing(api, sort="kev"), listing(api), "kev")


def test_the_dashboard_lists_images_in_the_order_chosen(ordered, azurite):
    """Chromium: the images table comes in the API's ``sort=kev`` order by default, and choosing
    "oldest scan" with a status filter shows the API's ``sort=age&status=failed`` listing."""
    from tests.support.api_server import ApiServer
    from tests.support.cdp import DevToolsBrowser
    from tests.test_dashboard import KEY
    from tests.support.browser import find_chromium

    api = make_api(azurite)
    labels = "[...document.querySelectorAll('#images tr[data-image]')].map(r => r.dataset.image)"
    with ApiServer(api, KEY) as server, DevToolsBrowser(str(find_chromium())) as browser:
        tab = browser.new_tab(f"{server.base_url}/api/dashboard?code={KEY}")
        tab.wait_for("document.body.dataset.state === 'ready'")
        assert tab.evaluate(labels) == [f"{i['repository']}:{i['tag']}" for i in listing(api, sort="kev")]
        tab.evaluate("document.getElementById('images-sort').value = 'age';"
                     "document.getElementById('images-status').value = 'failed';"
                     "document.body.dataset.state = 'chosen'")  # so the wait below sees the new listing
        tab.click("#images-go")
        tab.wait_for("document.body.dataset.state === 'ready'")
        wanted = [f"{i['repository']}:{i['tag']}" for i in listing(api, sort="age", status="failed")]
        assert tab.evaluate(labels) == wanted and 0 < len(wanted) < 15
