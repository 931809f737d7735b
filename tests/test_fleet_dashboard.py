"""Issue 24: the dashboard lists every image of the fleet from its current state, so an
image whose only audit is older than the newest 1,000 audits is on it (the old page listed
the newest 1,000 audits' images only). Headless Chromium against the handlers over HTTP;
the state seeded through the product's entity writer in batch transactions (fast)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

from scanner_core.config import load_config
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import ImageState, fleet_state_of
from tests.support.api_server import ApiServer
from tests.test_dashboard import KEY, chromium, row_of  # noqa: F401 - the browser fixture
from tests.test_http_api import make_api

NEWER = 1_000
OLD_IMAGE = "registry.example/old/forgotten:1.0"


def meta(audit_id: str, image: str, requested_at: int, critical: int) -> AuditMeta:
    return AuditMeta(audit_id=audit_id, scanner_id="s", scanner_version="t", timestamp=requested_at + 1,
                     requested_at=requested_at, audit_result=AuditResult.SUCCEEDED, image=image,
                     image_digest=f"sha256:{abs(hash(image)) % 10**60:064d}", scan_status="failed" if critical
                     else "passed", vulnerabilities={"critical": critical, "high": 0, "medium": 0, "low": 0,
                                                     "unknown": 0, "total": critical})


def test_the_dashboard_shows_an_image_older_than_the_newest_1000_audits(scanner_env, azurite, chromium):  # noqa: F811
    state = fleet_state_of(load_config().settings)
    now = int(time.time())
    assert state.record(meta("forgotten", OLD_IMAGE, now - 20 * 86_400, critical=2), "trivy-x/old")

    def repository(first: int) -> None:  # 1,000 newer audits, 100 tags per repository: one transaction each
        operations = []
        for n in range(first, first + 100):
            newer = ImageState.from_meta(meta(f"n{n}", f"registry.example/team/app-{n // 100}:v{n % 100}", now - n,
                                              critical=0), f"trivy-x/n{n}")
            assert newer is not None
            operations += [("upsert", newer.entity(key)) for key in newer.row_keys() if key.startswith("t:")]
        state.table.submit_transaction(operations)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(repository, range(0, NEWER, 100)))

    with ApiServer(make_api(azurite), KEY) as server:
        dom = chromium.dump_dom(f"{server.base_url}/api/dashboard?code={KEY}")
    assert 'data-state="ready"' in dom, dom[-2000:]
    old = row_of(dom, "registry.example/old/forgotten:1.0")
    assert 'data-status="failed"' in old and re.search(r'data-severity="critical">2<', old)
    assert len(re.findall(r"<tr data-image=", dom)) == NEWER + 1
    assert f"{NEWER + 1} images" in dom
