"""Azure Monitor through OpenTelemetry (issue 19): the spans of real scans and the
exported metrics, read with the OpenTelemetry SDK's in-memory exporters (the
distro's Azure Monitor exporter would send them to Application Insights; what it
is given is what these readers see). Real trivy, registry and Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import handlers
from scanner_core.metrics import read_snapshot
from scanner_core.storage import fleet_state_of
from scanner_core.telemetry import SCAN_SPANS, reset_telemetry, use_providers
from tests.support.app_insights import Ingestion
from tests.test_metrics import use_registry

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_CONNECTION = "InstrumentationKey=00000000-0000-4000-8000-00000000c0de;IngestionEndpoint=http://127.0.0.1:9/"


class Exported:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += list(metric.data.data_points)
        return found

    def every_attribute_value(self) -> str:
        values: list[str] = []
        for span in self.spans.get_finished_spans():
            values += [span.name, *map(str, (span.attributes or {}).values())]
            for event in span.events:
                values += map(str, (event.attributes or {}).values())
            values.append(str(span.status.description or ""))
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        values += map(str, (point.attributes or {}).values())
        return "\n".join(values)


@pytest.fixture
def exported() -> Iterator[Exported]:
    readers = Exported()
    use_providers(readers.tracer_provider, readers.meter_provider)
    try:
        yield readers
    finally:
        reset_telemetry()
        readers.tracer_provider.shutdown()
        readers.meter_provider.shutdown()


def scan(reference: str, audit_id: str) -> Any:
    return Scanner(load_config()).scan(
        ScanRequest(audit_id=audit_id, requested_at=datetime.now(timezone.utc), image=reference)
    )


def test_a_trace_per_scan_with_a_span_per_stage_and_no_secret(
    exported, scanner_env, registry, pushed_sample, audits, azurite
):
    use_registry(scanner_env, registry)
    scanner_env.set(APPLICATIONINSIGHTS_CONNECTION_STRING=FAKE_CONNECTION)
    ok = scan(pushed_sample.reference, f"traced-{uuid.uuid4().hex[:8]}")
    failed = scan(pushed_sample.reference.rsplit(":", 1)[0] + ":gone", "traced-missing")
    assert ok.succeeded and failed.meta.failure_reason == "not-found"

    spans = exported.spans.get_finished_spans()
    roots = [s for s in spans if s.name == "scan"]
    assert len(roots) == 2 and all(root.parent is None for root in roots)
    ok_root = next(r for r in roots if r.attributes["scanner.audit_id"] == ok.meta.audit_id)
    children = [s for s in spans if s.context.trace_id == ok_root.context.trace_id and s is not ok_root]
    assert {s.name for s in children} == set(SCAN_SPANS)  # pre-flight, DB, trivy, upload, index, follow-up
    assert all(s.parent is not None and s.parent.span_id == ok_root.context.span_id for s in children)
    assert ok_root.attributes["scanner.audit_result"] == "succeeded"
    assert ok_root.attributes["scanner.vulnerabilities.critical"] == ok.meta.vulnerabilities["critical"]
    assert ok_root.attributes["scanner.image_digest"] == pushed_sample.digest
    failed_root = next(r for r in roots if r.attributes["scanner.audit_id"] == "traced-missing")
    assert failed_root.attributes["scanner.failure_reason"] == "not-found"
    [failed_trivy] = [
        s for s in spans if s.context.trace_id == failed_root.context.trace_id and s.name == "trivy"
    ]
    assert failed_trivy.attributes["error.type"] == "ScanFailed"  # the type only, never its message

    # The metrics of the two audits.
    counted = {(p.attributes["result"], p.attributes["reason"]): p.value
               for p in exported.points("trivy_scanner_audits")}  # fmt: skip
    assert counted == {("succeeded", "none"): 1, ("audit-failed", "not-found"): 1}
    [durations] = exported.points("trivy_scanner_scan_duration_seconds")
    assert durations.count == 1 and durations.sum == pytest.approx(ok.meta.scan_duration_ms / 1000)

    # No secret reaches an attribute: the registry password, the SAS, the connection string.
    text = exported.every_attribute_value()
    sas_signature = audits.sas_url.split("sig=", 1)[1].split("&", 1)[0]
    for secret in (registry.password, sas_signature, "sig=", "InstrumentationKey", FAKE_CONNECTION):
        assert secret not in text


def test_the_heartbeat_exports_the_stored_metrics_as_gauges(
    exported, scanner_env, registry, pushed_sample, audits, azurite
):
    use_registry(scanner_env, registry)
    ok = scan(pushed_sample.reference, f"gauged-{uuid.uuid4().hex[:8]}")
    scanner_env.set(AzureWebJobsStorage=azurite.connection_string, SCAN_QUEUE_NAME=f"q-{uuid.uuid4().hex[:12]}")

    handlers.on_heartbeat(TimerRequest(past_due=False), handlers.binding_settings(), REPO_ROOT)

    critical = [
        p for p in exported.points("trivy_image_vulnerabilities")
        if p.attributes["severity"] == "Critical" and p.attributes["image_tag"] == "1.0"
    ]  # fmt: skip
    assert [p.value for p in critical] == [ok.meta.vulnerabilities["critical"]]
    assert critical[0].attributes["image_repository"] == "team/app"
    assert critical[0].attributes["image_digest"] == pushed_sample.digest
    queues = {p.attributes["queue"]: p.value for p in exported.points("trivy_scanner_queue_messages")}
    assert queues == {"scan": 0, "poison": 0}
    settings = load_config().settings
    snapshot = read_snapshot(settings.blob_container_url, scanner_env.short_id, None, None, max_images=10,
                             fleet=fleet_state_of(settings))
    [db_age] = [p.value for p in exported.points("trivy_scanner_db_age_seconds") if p.attributes["db"] == "trivy"]
    assert db_age == pytest.approx(snapshot.taken_at - snapshot.db_updated("trivy"), abs=30)
    assert [p.value for p in exported.points("trivy_scanner_db_stale")] == [1]  # the fixture DB is past NextUpdate


def test_telemetry_is_off_without_a_connection_string(scanner_env, audits):
    from scanner_core.telemetry import telemetry_active, tracer_span

    reset_telemetry()
    assert handlers.enable_telemetry(Scanner(load_config())) is False
    assert not telemetry_active()
    with tracer_span("pre-flight") as span:
        assert span is None


def test_the_connection_string_is_a_secret_setting(scanner_env):
    scanner_env.set(APPLICATIONINSIGHTS_CONNECTION_STRING=FAKE_CONNECTION)
    settings = load_config().settings
    assert FAKE_CONNECTION not in repr(settings)


def test_the_azure_monitor_distro_sends_spans_and_metrics_to_the_ingestion_endpoint():
    """The real distro, in a child process (it sets the process's global providers),
    sending to a loopback double of Application Insights' ingestion endpoint (Track API,
    ``POST /v2.1/track``: https://learn.microsoft.com/azure/azure-monitor/app/api-custom-events-metrics)."""
    probe = """
import os, sys
from scanner_core.telemetry import configure_telemetry, tracer_span
assert "opentelemetry" not in sys.modules and "azure.monitor" not in sys.modules
assert configure_telemetry(os.environ["CONNECTION"])
from scanner_core.telemetry.spans import STATE
with tracer_span("scan", **{"scanner.audit_id": "probe-1", "scanner.image": "https://u:hunter2@x.example/a?sig=abc"}):
    with tracer_span("pre-flight"):
        pass
STATE.instruments.audits.add(1, {"result": "succeeded", "reason": "none"})
from opentelemetry import metrics, trace
trace.get_tracer_provider().force_flush()
metrics.get_meter_provider().force_flush()
print("flushed")
os._exit(0)
"""
    with Ingestion() as ingestion:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS", "OTEL_"))}
        env |= {"CONNECTION": ingestion.connection_string(), "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}
        completed = subprocess.run(
            [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert completed.returncode == 0 and "flushed" in completed.stdout, completed.stderr[-3000:]
        received = ingestion.received
    kinds = {item["data"]["baseType"] for item in received}
    assert {"RequestData", "RemoteDependencyData"} & kinds and "MetricData" in kinds, kinds
    names = {item["data"]["baseData"].get("name") for item in received}
    assert {"scan", "pre-flight"} <= names
    metric_names = {m["name"] for item in received if item["data"]["baseType"] == "MetricData"
                    for m in item["data"]["baseData"]["metrics"]}  # fmt: skip
    assert "trivy_scanner_audits" in metric_names
    sent = json.dumps(received)
    assert "hunter2" not in sent and "sig=abc" not in sent and "probe-1" in sent
