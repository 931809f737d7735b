"""The dashboard in a real browser: headless Chromium loads ``GET /api/dashboard``
from the function app's handlers over HTTP, against audits that real trivy
scans wrote to Azurite; the test reads the DOM the page's script built."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests

from tests.support.api_server import ApiServer
from tests.support.browser import Chromium, find_chromium
from tests.test_http_api import make_api
from tests.test_monitor_notify import FIRST_AT, caches, image, scan  # noqa: F401 - fixtures

KEY = "dashboard-test-key"


@pytest.fixture(scope="module")
def chromium() -> Chromium:
    return Chromium(find_chromium())


def row_of(dom: str, label: str) -> str:
    found = re.search(rf'<tr data-image="{re.escape(label)}" data-status="[a-z]+">(.*?)</tr>', dom, flags=re.DOTALL)
    assert found, f"no row for {label} in {dom}"
    return found.group(0)


def test_the_dashboard_shows_badges_counts_db_age_and_trends(
    scanner_env,
    caches,  # noqa: F811 - the fixture imported above
    image,  # noqa: F811
    registry,
    sample_image,
    audits,
    azurite,
    chromium,
    tmp_path,  # noqa: F811
):
    repository = image.rsplit(":", 1)[0]
    web = f"{registry.address}/team/web:2.0"
    missing = f"{repository}:no-such-tag"
    assert scan(scanner_env, caches["first"], image, "app-1", FIRST_AT).succeeded
    assert scan(scanner_env, caches["learnt"], image, "app-2", FIRST_AT + timedelta(hours=1)).succeeded
    assert scan(scanner_env, caches["passing"], web, "web-1", FIRST_AT, input_tar=sample_image.path).succeeded
    assert not scan(scanner_env, caches["first"], missing, "gone", FIRST_AT + timedelta(hours=2)).succeeded

    with ApiServer(make_api(azurite), KEY) as server:
        url = f"{server.base_url}/api/dashboard?code={KEY}"
        page = requests.get(url, timeout=10)
        dom = chromium.dump_dom(url)
        screenshot = chromium.screenshot(url, tmp_path / "dashboard.png", window=(1400, 700))
        assert requests.get(f"{server.base_url}/api/security/summary", timeout=10).status_code == 401
    print(f"dashboard screenshot: {screenshot}")

    # No external assets, and a policy that would block any: the script ran under it.
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    assert 'data-state="ready"' in dom, dom

    totals = dict(re.findall(r'id="total-([a-z-]+)">(\d+)<', dom))
    assert totals == {"total": "3", "passed": "1", "warning": "0", "failed": "1", "audit-failed": "1"}  # images, by their latest audit
    assert "vulnerability DB: updated" in dom and "(2026-11-03T00:00:00Z)" in dom

    app = row_of(dom, image)
    assert 'data-status="failed"' in app and '<span class="badge failed" data-badge="failed">failed</span>' in app
    assert '<span class="decision">pending</span>' in app
    counts = dict(re.findall(r'data-severity="([a-z]+)">([^<]*)<', app))
    assert counts == {"critical": "2", "high": "2", "medium": "1", "low": "1", "unknown": "1"}
    assert 'data-points="3,4"' in app  # critical+high: the first DB, then the one that learnt

    web_row = row_of(dom, web)
    assert 'data-badge="passed">passed<' in web_row
    assert dict(re.findall(r'data-severity="([a-z]+)">([^<]*)<', web_row))["critical"] == "0"
    assert 'data-points="2"' in web_row

    assert 'data-badge="error">error<' in row_of(dom, missing)
    assert screenshot.stat().st_size > 5000
