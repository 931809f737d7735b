"""The monitor loop end to end, as issue 10's "done when" puts it: a tag is
pushed and scanned by the watch timer, the DB learns a new advisory, the rescan
timer queues the image again, the rescan records the change and notifies a real
receiver once, and the dashboard shows it in a real browser.

Every part is real: the registry, Azurite's queue and blobs, trivy with DBs the
test writes, the queue trigger's handler, a webhook receiver on 127.0.0.1 and
headless Chromium; only the Functions host's HTTP front is the documented
double of tests/support/api_server.py.
"""

from __future__ import annotations

import re

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.functions import monitor_handlers
from tests.conftest import REPO_ROOT, Audits
from tests.support.api_server import ApiServer
from tests.support.browser import Chromium, find_chromium
from tests.support.webhook import WebhookReceiver
from tests.test_http_api import make_api
from tests.test_monitor_rescan import DAY1, DAY2, finding_ids, meta_of, write_db
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture

KEY = "loop-test-key"
NEW_CVE = "CVE-2099-0100"


def high_and_critical(meta: dict) -> int:
    return meta["vulnerabilities"]["critical"] + meta["vulnerabilities"]["high"]


def test_push_scan_learn_rescan_notify_and_see_it_on_the_dashboard(
    monitor: Monitor,  # noqa: F811 - the fixture imported above
    audits: Audits,
    azurite,
    tmp_path,
) -> None:
    cache = write_db(tmp_path / "cache", DAY1)
    with WebhookReceiver() as receiver:
        monitor.env.set(TRIVY_CACHE_DIR=str(cache), NOTIFY_WEBHOOK_URLS=receiver.url)
        monitor.configure([{"repository": f"{monitor.registry.address}/loop/app", "tags": r"^\d+\.\d+$"}])

        # 1. A tag pushed after the first watch run is queued by the next one, once.
        assert watch(monitor) == []  # nothing there yet
        digest = monitor.push("loop/app", "1.0")
        (message,) = watch(monitor)
        assert (message.payload["image-full-name"], message.payload["tag"], message.payload["trigger"]) == (
            monitor.ref("loop/app", digest), "1.0", "watch")
        assert watch(monitor) == []

        # 2. The queue trigger scans it; a newly seen failing image is news (one POST).
        assert monitor.queue.deliver(message, REPO_ROOT) == []
        first = meta_of(monitor, audits, message.payload["image-scan-id"])
        assert first["audit-result"] == "succeeded" and NEW_CVE not in finding_ids(first)
        assert receiver.wait_for(1)

        # 3. The DB learns of a new critical advisory; the rescan timer queues the image again.
        write_db(cache, DAY2, refreshed=True)
        monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
        assert monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT).current_db == "2026-11-02T06:00:00Z"
        (rescan,) = monitor.queue.take()
        assert rescan.payload["trigger"] == "rescan"

        # 4. The rescan finds it, records the change, and notifies once, also when redelivered.
        assert monitor.queue.deliver(rescan, REPO_ROOT) == []
        assert monitor.queue.deliver(rescan, REPO_ROOT) == []  # the same message again
        second = meta_of(monitor, audits, rescan.payload["image-scan-id"])
        assert NEW_CVE in finding_ids(second)
        assert second["previous-audit-id"] == first["audit-id"]
        assert NEW_CVE in second["changes"]["new"]
        assert receiver.wait_for(2)
        notifications = receiver.all()
        assert len(notifications) == 2, [n.json() for n in notifications]
        event = notifications[1].json()
        assert NEW_CVE in event["changes"]["new"]
        assert NEW_CVE in [finding["id"] for finding in event["new-findings"]]
        assert event["audit-id"] == second["audit-id"]

    # 5. The dashboard, in headless Chromium, shows the image failing with both points of its trend.
    with ApiServer(make_api(azurite), KEY) as server:
        dom = Chromium(find_chromium()).dump_dom(f"{server.base_url}/api/dashboard?code={KEY}")
    assert 'data-state="ready"' in dom, dom
    rows = re.findall(r'<tr data-image="([^"]*loop/app[^"]*)" data-status="([a-z]+)">(.*?)</tr>', dom, re.DOTALL)
    assert rows, dom
    _label, status, row = rows[0]
    assert status == "failed" and 'data-badge="failed">failed<' in row
    assert f'data-points="{high_and_critical(first)},{high_and_critical(second)}"' in row
    assert high_and_critical(second) == high_and_critical(first) + 1


def watch(running: Monitor) -> list:
    """One run of the watch timer; the messages it put on the trigger queue."""
    monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
    return running.queue.take()


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    find_chromium()  # a missing browser fails here, clearly, before any scan
