"""Issue 24, item 2: the metrics scrape reads the fleet state (the newest ``METRICS_MAX_IMAGES``
images, the first rows of the ``recent`` order), the fleet snapshot and the audit tally (a point read each), never
the audit history. Real Azurite (blobs and tables); metas made here and recorded through the
product's own writers (the index and the state), as the ship stage records them."""

from __future__ import annotations

import pytest
from azure.data.tables import TableClient

from scanner_core.config import load_config
from scanner_core.models import AuditMeta
from scanner_core.storage import AuditIndex, read_audit_tally, take_snapshot, tally_audits
from tests.test_audit_index import folder_of, synthetic_meta
from tests.test_http_api import make_api
from tests.test_metrics import samples, scrape

NOW = 1_790_000_000


def audit(n: int, image: str, age_seconds: int, **update: object) -> AuditMeta:
    return synthetic_meta(n, audit_id=f"m-{n}", image=image, requested_at=NOW - age_seconds).model_copy(update=update)


def test_a_scrape_reads_the_state_and_the_tallies_never_the_history(scanner_env, azurite, audits, monkeypatch):
    scanner_env.set(METRICS_MAX_IMAGES="2")
    api = make_api(azurite)
    state = api.fleet_state()
    # Three images; "old" has only an audit older than the rest (the old walk kept the newest
    # requests' images), and 6 more audits of "app" are history the scrape must not read.
    history = [audit(n, "registry.example.com/team/app:1.0", 100 + n, scan_duration_ms=2000) for n in range(6)]
    newest = [audit(10, "registry.example.com/team/new:1.0", 10), audit(11, "registry.example.com/team/app:1.0", 5),
              audit(12, "registry.example.com/team/old:1.0", 9000)]
    with AuditIndex(api.config.settings.blob_container_url, api.short_id) as index:
        for meta in history + newest:
            index.record(meta, folder_of(meta, api.short_id))
            if state.record(meta, folder_of(meta, api.short_id)):  # as the ship stage: the state, its order rows
                state.sync_order_of(meta)
        take_snapshot(state, now=NOW, newest=2)  # the heartbeat timer's two jobs
        first = tally_audits(state, index.rows(), now=NOW)
    assert first.rows_read == 9 and sum(first.total.audits.values()) == 9
    reads: list[str] = []
    monkeypatch.setattr(AuditIndex, "rows", lambda self: pytest.fail("the scrape walked the audit index"))
    query = TableClient.query_entities

    def counted(self: TableClient, *args: object, **kwargs: object) -> object:
        reads.append(str(args[0] if args else kwargs.get("query_filter")))
        return query(self, *args, **kwargs)

    monkeypatch.setattr(TableClient, "query_entities", counted)

    families = scrape(api)["families"]

    exported = {s.labels["image_repository"] for s in samples(families, "trivy_scanner_image_status")}
    assert exported == {"team/app", "team/new"}  # the two most recently requested
    assert samples(families, "trivy_scanner_images")[0].value == 3 and len(reads) == 1
    assert "RowKey lt '~'" in reads[0]  # the first rows of the ``recent`` order: a range, not a walk of the fleet
    # An upgraded deployment before reindex (no order rows): one query bounded by the snapshot's cutoff.
    monkeypatch.setattr(TableClient, "query_entities", query)
    recent = state.order.table("recent")
    for entity in list(recent.query_entities("PartitionKey eq 'o'")):
        recent.delete_entity(entity["PartitionKey"], entity["RowKey"])
    monkeypatch.setattr(TableClient, "query_entities", counted)
    reads.clear()
    again = scrape(api)["families"]
    assert {s.labels["image_repository"] for s in samples(again, "trivy_scanner_image_status")} == exported
    assert any("requested_at ge" in read for read in reads)
    assert sum(s.value for s in samples(families, "trivy_scanner_audits_total")) == 9
    [count] = samples(families, "trivy_scanner_scan_duration_seconds_count")
    assert count.value == 6


def test_the_tally_reads_only_the_audits_since_it_settled(scanner_env, azurite, audits):
    api = make_api(azurite)
    state = api.fleet_state()
    settings = load_config().settings
    metas = [audit(n, f"registry.example.com/team/app-{n}:1.0", 40_000 - n * 1000) for n in range(5)]
    with AuditIndex(settings.blob_container_url, api.short_id) as index:
        for meta in metas:
            index.record(meta, folder_of(meta, api.short_id))
        tally_audits(state, index.rows(), now=NOW)
        later = audit(9, "registry.example.com/team/app-9:1.0", -60, failure_reason="timeout")  # after NOW
        index.record(later, folder_of(later, api.short_id))
        tally = tally_audits(state, index.rows(), now=NOW + 3600)
    assert tally.rows_read == 1  # the five earlier audits are settled: 11 h before NOW, LATE_SECONDS is 6 h
    assert sum(tally.total.audits.values()) == 6 and read_audit_tally(state) == tally
