"""The browser harness itself: real headless Chromium renders a page served
from 127.0.0.1, its scripts fetch JSON, and the test reads the DOM they built."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.browser import Chromium, find_chromium
from tests.support.webhook import StaticServer, WebhookReceiver

DASHBOARD = Path(__file__).resolve().parents[1] / "scanner_core" / "functions" / "static" / "dashboard.html"


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    return Chromium(find_chromium())


def test_chromium_runs_the_pages_scripts_and_their_fetches(chromium: Chromium, tmp_path: Path) -> None:
    page = b"""<!doctype html><html><body><p id="out">waiting</p><script>
      fetch("/data.json").then(r => r.json()).then(d => {
        setTimeout(() => { document.getElementById("out").textContent = "answer " + (d.a + d.b); }, 50);
      });
    </script></body></html>"""
    with StaticServer({"/index.html": page, "/data.json": b'{"a": 40, "b": 2}'}, [(".html", "text/html")]) as server:
        dom = chromium.dump_dom(f"{server.base_url}/index.html")
        shot = chromium.screenshot(f"{server.base_url}/index.html", tmp_path / "page.png")
        assert "/data.json" in server.hits
    assert '<p id="out">answer 42</p>' in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _audit(image: str, repository: str, tag: str, status: str, counts: dict[str, int], at: str) -> dict:
    return {
        "audit-id": f"{tag}-{at}",
        "image": image,
        "repository": repository,
        "tag": tag,
        "digest": "sha256:" + "a" * 64,
        "audit-result": "succeeded",
        "scan-status": status,
        "decision": "pending",
        "vulnerabilities": counts | {"total": sum(counts.values())},
        "requested-at": at,
        "scanned-at": at,
        "trivy-db-updated-at": "2026-11-01T00:00:00Z",
    }


def test_the_dashboard_page_renders_totals_badges_and_trends_from_json(chromium: Chromium, tmp_path: Path) -> None:
    failed = _audit(
        "r/app:2",
        "r/app",
        "2",
        "failed",
        {"critical": 2, "high": 3, "medium": 0, "low": 1, "unknown": 0},
        "2026-11-22T10:00:00Z",
    )
    older = _audit(
        "r/app:2",
        "r/app",
        "2",
        "passed",
        {"critical": 0, "high": 1, "medium": 0, "low": 1, "unknown": 0},
        "2026-11-21T10:00:00Z",
    )
    passed = _audit(
        "r/web:1",
        "r/web",
        "1",
        "passed",
        {"critical": 0, "high": 0, "medium": 4, "low": 0, "unknown": 0},
        "2026-11-22T09:00:00Z",
    )
    summary = {"total": 3, "passed": 2, "warning": 0, "failed": 1, "audit-failed": 0, "audits": [failed, passed, older]}
    files = {
        "/api/dashboard": DASHBOARD.read_bytes(),
        "/api/security/summary": json.dumps(summary).encode(),
        # The image rows come from the fleet state's pages (issue 24), one per image: the latest audit.
        "/api/images": json.dumps({"images": [failed, passed], "next-cursor": None}).encode(),
        "/api/images/r%2Fapp/history": json.dumps({"audits": [failed, older]}).encode(),
        "/api/images/r%2Fweb/history": json.dumps({"audits": [passed]}).encode(),
    }
    with StaticServer(files, [("/api/dashboard", "text/html")]) as server:
        url = f"{server.base_url}/api/dashboard?code=k3y"
        dom = chromium.dump_dom(url)
        chromium.screenshot(url, tmp_path / "dashboard.png")
        assert all("code=k3y" in hit for hit in server.hits if hit.startswith("/api/") and "dashboard" not in hit)
    assert 'data-state="ready"' in dom
    assert re.search(r'id="total-failed">1<', dom) and re.search(r'id="total-passed">2<', dom)
    app_row = re.search(r'<tr data-image="r/app:2" data-status="failed">(.*?)</tr>', dom).group(1)
    assert '<span class="badge failed" data-badge="failed">failed</span>' in app_row
    assert 'data-severity="critical">2<' in app_row and 'data-severity="high">3<' in app_row
    assert 'data-points="1,5"' in app_row  # critical+high, oldest first
    web_row = re.search(r'<tr data-image="r/web:1" data-status="passed">(.*?)</tr>', dom).group(1)
    assert 'data-badge="passed">passed<' in web_row and 'data-points="0"' in web_row
    assert (tmp_path / "dashboard.png").stat().st_size > 1000


def test_the_dashboard_says_when_the_api_fails(chromium: Chromium) -> None:
    with StaticServer({"/api/dashboard": DASHBOARD.read_bytes()}, [("/api/dashboard", "text/html")]) as server:
        dom = chromium.dump_dom(f"{server.base_url}/api/dashboard")
    assert 'data-state="error"' in dom
    assert "Could not load the audits: security/summary: HTTP 404" in dom


def test_webhook_receiver_records_posts_and_fails_on_request() -> None:
    import requests

    with WebhookReceiver(statuses=[503]) as receiver:
        first = requests.post(receiver.url, json={"n": 1}, timeout=5)
        second = requests.post(receiver.url, json={"n": 2}, timeout=5)
    assert (first.status_code, second.status_code) == (503, 204)
    assert [r.json()["n"] for r in receiver.accepted()] == [2]
    assert receiver.all()[0].headers["content-type"] == "application/json"
