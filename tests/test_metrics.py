"""``GET /api/metrics`` (issue 19) against audits that real trivy scans wrote to
Azurite, read back as Prometheus reads it: parsed with ``prometheus-client``'s
parser, then scraped by a real Prometheus (Debian's package) through the same
HTTP double of the Functions host the other API tests use, and asked by PromQL.
The Grafana dashboard's queries and the alert rules run against that scrape."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from azure.storage.queue import QueueClient
from prometheus_client.parser import text_string_to_metric_families

from scanner_core.approvals import ApprovalStore, Decision, Reviewer, approval_id, decide_request
from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import ApiContext, metrics
from scanner_core.heartbeat import write_heartbeat
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import AuditIndex
from tests.support.api_server import ApiServer
from tests.support.prometheus import Prometheus
from tests.test_audit_index import folder_of, synthetic_meta
from tests.test_http_api import http, make_api

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES = REPO_ROOT / "deploy" / "prometheus" / "trivy-scanner-rules.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "trivy-scanner.json"
KEY = "metrics-test-key"
TITLE = {"critical": "Critical", "high": "High", "medium": "Medium", "low": "Low", "unknown": "Unknown"}
BACKLOG = 23  # messages left on the firing scanner's queue: above the rule's 20


@dataclass
class Fleet:
    """One scanner's audits: what the metrics must say about them."""

    api: ApiContext
    metas: list[AuditMeta]
    succeeded: AuditMeta
    db_updated_at: str


def scrape(api: ApiContext, accept: str | None = None) -> dict[str, Any]:
    headers = {"accept": accept} if accept else {}
    request = http("GET", "metrics")
    request = type(request)(method="GET", url=request.url, headers=headers, params={}, route_params={}, body=b"")
    response = metrics(request, api)
    assert response.status_code == 200, response.get_body()
    body = response.get_body().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    return {"body": body, "families": families, "mimetype": response.mimetype}


def samples(families: dict[str, Any], name: str, **labels: str) -> list[Any]:
    family = families[re.sub(r"_(total|bucket|count|sum)$", "", name)]
    return [s for s in family.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def scan_real(scanner_env, reference: str, audit_id: str, trigger: str | None = None) -> AuditMeta:
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id=audit_id, requested_at=datetime.now(timezone.utc), image=reference, trigger=trigger)
    )
    assert outcome.meta_written
    return outcome.meta


def use_registry(scanner_env, registry) -> None:
    scanner_env.write_config(
        {
            "heartbeat-period": 60,
            "registries": [
                {"address": registry.address, "username": registry.username, "password": registry.password,
                 "insecure": True}
            ],
        }
    )  # fmt: skip


def fill_queue(api: ApiContext, name: str, count: int) -> None:
    with QueueClient.from_connection_string(api.queue_connection, name) as client:
        client.create_queue()
        for n in range(count):
            client.send_message(json.dumps({"n": n}))


def build_fleet(scanner_env, registry, pushed_sample, azurite, *, failing: bool) -> Fleet:
    """Real scans (a pushed image, and for ``failing`` a tag that is not there), a few
    synthetic failed audits in the index, a real heartbeat, messages on the queues."""
    use_registry(scanner_env, registry)
    api = make_api(azurite)
    succeeded = scan_real(scanner_env, pushed_sample.reference, f"ok-{uuid.uuid4().hex[:8]}")
    assert succeeded.audit_result is AuditResult.SUCCEEDED and succeeded.scan_duration_ms is not None
    metas = [succeeded]
    if failing:
        missing = scan_real(scanner_env, pushed_sample.reference.rsplit(":", 1)[0] + ":gone", "missing-tag")
        assert missing.audit_result is AuditResult.AUDIT_FAILED and missing.failure_reason == "not-found"
        now = int(time.time())
        synthetic = [
            synthetic_meta(6, audit_id="synthetic-failed-1", requested_at=now - 30),
            synthetic_meta(13, audit_id="synthetic-failed-2", requested_at=now - 20).model_copy(
                update={"failure_reason": "timeout", "failure_kind": "transient"}
            ),
        ]
        record_audits(api, synthetic)
        metas += [missing, *synthetic]
        fill_queue(api, api.queue_name, BACKLOG)
        fill_queue(api, f"{api.queue_name}-poison", 2)
    write_heartbeat(Scanner(load_config()))
    assert succeeded.trivy_db_updated_at
    return Fleet(api, metas, succeeded, succeeded.trivy_db_updated_at)


def record_audits(api: ApiContext, metas: list[AuditMeta]) -> None:
    """Synthetic audits in the index and the images' state, as the ship stage records them."""
    state = api.fleet_state()
    with AuditIndex(api.config.settings.blob_container_url, api.short_id) as index:
        for meta in metas:
            index.record(meta, folder_of(meta, api.short_id))
            state.record(meta, folder_of(meta, api.short_id))


def switch_scanner(scanner_env, **values: str) -> None:
    """A second scanner in the same container: its own id, so its own index and heartbeat."""
    scanner_env.scanner_id = str(uuid.uuid4())
    scanner_env.set(SCANNER_IDENTIFIER=scanner_env.scanner_id, **values)


# -- the exposition ----------------------------------------------------------


def test_the_exposition_says_what_the_audits_say(scanner_env, registry, pushed_sample, azurite, audits):
    fleet = build_fleet(scanner_env, registry, pushed_sample, azurite, failing=True)
    before = time.time()
    answer = scrape(fleet.api)
    families, body = answer["families"], answer["body"]
    assert answer["mimetype"].startswith("text/plain") and "version=0.0.4" in answer["mimetype"]

    # Per image: the latest succeeded audit's findings by severity, after suppressions.
    image = {"image_tag": "1.0", "image_digest": fleet.succeeded.image_digest}
    found = {s.labels["severity"]: s.value for s in samples(families, "trivy_image_vulnerabilities", **image)}
    expected = {TITLE[k]: v for k, v in fleet.succeeded.vulnerabilities.items() if k in TITLE}
    assert found == expected and sum(found.values()) > 0
    [sample] = samples(families, "trivy_image_vulnerabilities", severity="Critical", **image)
    assert sample.labels["image_registry"] == registry.address
    assert sample.labels["image_repository"] == "team/app"
    # The same repository's ":gone" tag has only a failed audit: a status, no findings.
    [gone] = samples(families, "trivy_scanner_image_status", image_tag="gone")
    assert gone.labels["status"] == "audit-failed" and gone.value == 1
    [status] = samples(families, "trivy_scanner_image_status", image_tag="1.0")
    assert status.labels["status"] == fleet.succeeded.scan_status
    # Approval state: these scans had no creating trigger (issue 15), so no request and no series.
    assert "trivy_scanner_image_approval" in body and not samples(families, "trivy_scanner_image_approval")
    [age] = samples(families, "trivy_scanner_image_db_age_seconds", **image)
    db_time = datetime.fromisoformat(fleet.db_updated_at.replace("Z", "+00:00")).timestamp()
    assert before - db_time - 5 <= age.value <= time.time() - db_time + 5

    # Per scanner: audits by result and reason, durations, queues, DB, heartbeat.
    outcomes = Counter((m.audit_result.value, m.failure_reason or "") for m in fleet.metas)
    counted = {(s.labels["result"], s.labels["reason"]): s.value
               for s in samples(families, "trivy_scanner_audits_total")}  # fmt: skip
    assert counted == outcomes
    recent = {(s.labels["result"], s.labels["reason"]): s.value
              for s in samples(families, "trivy_scanner_recent_audits")}  # fmt: skip
    assert recent == outcomes  # all of them were made a moment ago
    [count] = samples(families, "trivy_scanner_scan_duration_seconds_count")
    [total] = samples(families, "trivy_scanner_scan_duration_seconds_sum")
    assert count.value == 1 and total.value == pytest.approx(fleet.succeeded.scan_duration_ms / 1000)
    depth = {s.labels["queue"]: s.value for s in samples(families, "trivy_scanner_queue_messages")}
    assert depth == {"scan": BACKLOG, "poison": 2}
    [db_age] = samples(families, "trivy_scanner_db_age_seconds", db="trivy")
    assert db_age.value == pytest.approx(age.value, abs=5)  # the heartbeat read the same DB
    assert samples(families, "trivy_scanner_db_stale")[0].value == 1  # the fixture DB's NextUpdate is past
    [beat] = samples(families, "trivy_scanner_heartbeat_timestamp_seconds")
    assert before - 120 <= beat.value <= time.time()
    assert samples(families, "trivy_scanner_images")[0].value == 4  # team/app:1.0, :gone, two synthetic
    assert "sig=" not in body and registry.password not in body

    # OpenMetrics when the scraper asks for it, as Prometheus does.
    open_metrics = scrape(fleet.api, "application/openmetrics-text; version=1.0.0")
    assert open_metrics["mimetype"].startswith("application/openmetrics-text")
    assert open_metrics["body"].rstrip().endswith("# EOF")


def test_an_images_approval_state_is_a_series(scanner_env, registry, pushed_sample, azurite, audits):
    """A scan for the HTTP API creates the digest's approval request (issue 15); the
    metric follows the request's state as a reviewer changes it."""
    use_registry(scanner_env, registry)
    api = make_api(azurite)
    meta = scan_real(scanner_env, pushed_sample.reference, f"req-{uuid.uuid4().hex[:8]}", trigger="request")
    repository = f"{registry.address}/team/app"
    store = ApprovalStore(api.config.settings.blob_container_url, api.short_id, fleet_state=api.fleet_state)  # as the API
    found = store.get(approval_id(repository, meta.image_digest))
    assert found is not None, "the request's scan created no approval request"
    request, _ = found
    image = {"image_tag": "1.0", "image_digest": meta.image_digest}
    [state] = samples(scrape(api)["families"], "trivy_scanner_image_approval", **image)
    assert state.labels["state"] == request.state and state.value == 1
    assert request.state in {"pending", "auto-rejected"}
    action = "reject" if request.state == "pending" else "approve"
    decision = Decision(action, Reviewer("metrics-test", authenticated=False), "seen in the metrics test")
    decide_request(store, request.id, decision, found[1], datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    [after] = samples(scrape(api)["families"], "trivy_scanner_image_approval", **image)
    assert after.labels["state"] == ("rejected" if request.state == "pending" else "approved")


def test_metrics_max_images_keeps_the_newest(scanner_env, azurite, audits):
    scanner_env.set(METRICS_MAX_IMAGES="3")
    api = make_api(azurite)
    metas = [synthetic_meta(i, image=f"registry.example.com/team/app-{i}:1.0") for i in range(5)]
    record_audits(api, metas)
    families = scrape(api)["families"]
    exported = {s.labels["image_repository"] for s in samples(families, "trivy_scanner_image_status")}
    assert exported == {"team/app-4", "team/app-3", "team/app-2"}  # newest requests first
    assert samples(families, "trivy_scanner_images")[0].value == 5
    assert samples(families, "trivy_scanner_images_exported")[0].value == 3
    assert sum(s.value for s in samples(families, "trivy_scanner_audits_total")) == 5  # counts are not capped


def test_a_bad_metrics_setting_is_named(scanner_env):
    scanner_env.set(METRICS_MAX_IMAGES="0")
    with pytest.raises(Exception, match="METRICS_MAX_IMAGES"):
        load_config()


def function_json(env: dict[str, str]) -> dict[str, Any]:
    probe = (
        "import json, function_app\n"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())"
        " for f in function_app.app.get_functions()}['api_metrics']))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "METRICS_ANONYMOUS"} | env, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_route_needs_a_function_key_unless_metrics_anonymous():
    def auth_level(env: dict[str, str]) -> str:
        [trigger] = [b for b in function_json(env)["bindings"] if b["type"] == "httpTrigger"]
        assert trigger["route"] == "metrics" and trigger["methods"] == ["GET"]
        return str(trigger["authLevel"]).lower()

    assert auth_level({}) == "function"
    assert auth_level({"METRICS_ANONYMOUS": "false"}) == "function"
    assert auth_level({"METRICS_ANONYMOUS": "true"}) == "anonymous"
    refused = subprocess.run(
        [sys.executable, "-c", "import function_app; function_app.app.get_functions()"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, env=os.environ | {"METRICS_ANONYMOUS": "maybe"}, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "METRICS_ANONYMOUS" in refused.stderr, refused.stderr[-2000:]


def test_a_wrong_method_is_a_405(scanner_env, azurite, audits):
    response = metrics(http("POST", "metrics"), make_api(azurite))
    assert response.status_code == 405 and response.headers["Allow"] == "GET"


# -- a real scrape -------------------------------------------------------------


@pytest.fixture
def scraped(scanner_env, registry, pushed_sample, azurite, audits, tmp_path):
    """Two scanners scraped by one Prometheus: ``firing`` (failures, a backlog, a stale
    DB) and ``quiet`` (one good audit, an empty queue, a DB its setting calls fresh)."""
    firing = build_fleet(scanner_env, registry, pushed_sample, azurite, failing=True)
    switch_scanner(scanner_env, TRIVY_DB_STALE_AFTER_HOURS="100000")
    quiet = build_fleet(scanner_env, registry, pushed_sample, azurite, failing=False)
    with (
        ApiServer(firing.api, KEY) as firing_server,
        ApiServer(quiet.api, KEY) as quiet_server,
        Prometheus(
            tmp_path / "prometheus",
            {
                "firing": (firing_server.base_url, "/api/metrics", {"code": KEY}),
                "quiet": (quiet_server.base_url, "/api/metrics", {"code": KEY}),
            },
            rule_files=[RULES],
        ) as prometheus,
    ):
        prometheus.wait_until(lambda: set(prometheus.targets_up().values()) == {"up"}, 60, "scraping both")
        two_scrapes = 'min(count_over_time(trivy_scanner_heartbeat_timestamp_seconds[1m])) >= 2 and count(up) == 2'
        prometheus.wait_until(lambda: bool(prometheus.query(two_scrapes)), 30, "holding two scrapes of each")
        yield prometheus, firing, quiet


def test_prometheus_answers_with_the_audits_numbers(scraped):
    prometheus, firing, quiet = scraped
    image = f'image_repository="team/app",image_tag="1.0",image_digest="{firing.succeeded.image_digest}"'
    critical = prometheus.value(f'trivy_image_vulnerabilities{{job="firing",severity="Critical",{image}}}')
    assert critical == firing.succeeded.vulnerabilities["critical"] > 0

    by_reason = {
        r["metric"]["reason"]: float(r["value"][1])
        for r in prometheus.query('sum by (reason) (trivy_scanner_audits_total{job="firing",result!="succeeded"})')
    }
    expected = Counter(m.failure_reason for m in firing.metas if m.audit_result is not AuditResult.SUCCEEDED)
    assert by_reason == expected == {"not-found": 2, "timeout": 1}

    db_time = datetime.fromisoformat(firing.db_updated_at.replace("Z", "+00:00")).timestamp()
    age = prometheus.value('trivy_scanner_db_age_seconds{job="firing",db="trivy"}')
    assert age == pytest.approx(time.time() - db_time, abs=30)
    assert prometheus.value('trivy_scanner_db_updated_timestamp_seconds{job="quiet",db="trivy"}') == db_time


def test_every_dashboard_query_returns_series(scraped):
    prometheus, _, _ = scraped
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    [source] = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == ("DS_PROMETHEUS", "datasource", "prometheus")
    expressions = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            expressions.append((panel["title"], target["expr"]))
    titles = {title for title, _ in expressions}
    for wanted in ("Critical findings", "Worst images", "Failures by reason", "Queue depth", "DB age",
                   "Scan duration", "Findings over time"):  # fmt: skip
        assert any(title.startswith(wanted) for title in titles), wanted
    for title, expression in expressions:
        concrete = re.sub(r"\$__(rate_interval|interval|range)", "5m", expression)
        assert "$" not in concrete, (title, expression)
        assert prometheus.query(concrete), f"{title}: {expression} returned no series"


def test_the_alert_rules_fire_on_the_firing_scanner_only(scraped):
    prometheus, _, _ = scraped
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert names == {"TrivyScanQueueBackingUp", "TrivyDatabaseStale", "TrivyScanFailureRate"}
    loaded = {rule["name"]: rule for rule in prometheus.rules()}
    assert set(loaded) == names and all(rule["health"] == "ok" for rule in loaded.values()), loaded

    def active() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for alert in prometheus.alerts():
            # pending: the condition holds and waits out the rule's "for"; then firing.
            assert alert["state"] in ("pending", "firing")
            found.setdefault(alert["labels"]["alertname"], set()).add(alert["labels"]["job"])
        return found

    prometheus.wait_until(lambda: len(active()) == 3, 30, "alerting")
    assert active() == {name: {"firing"} for name in names}  # and never for the quiet scanner


def test_the_alert_rules_wait_out_their_for_and_fire_only_where_they_should():
    """promtool (Debian's prometheus package) checks the rules file and runs its unit tests:
    each rule quiet before its ``for:`` has passed, then firing for the bad series only."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 3 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULES.with_name("trivy-scanner-rules.test.yml").name],
        cwd=RULES.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
