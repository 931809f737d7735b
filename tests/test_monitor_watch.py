"""New tags are scanned without anyone asking: the watch timer and ACR's Event
Grid events, against the real registry, Azurite's queue and blobs, and trivy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.config import load_config
from scanner_core.errors import ConfigurationError
from scanner_core.functions import monitor_handlers
from tests.conftest import REPO_ROOT, Audits, ScannerEnvironment
from tests.support.azurite import Azurite
from tests.support.monitor import TriggerQueue, image_pushed_event, push_distinct_image
from tests.support.registry import Registry


@dataclass
class Monitor:
    env: ScannerEnvironment
    registry: Registry
    queue: TriggerQueue
    workdir: Path

    def configure(self, watch: list[dict], **settings: str) -> None:
        self.env.write_config({
            "heartbeat-period": 60,
            "registries": [{"address": self.registry.address, "username": self.registry.username,
                            "password": self.registry.password, "insecure": True}],
            "watch": watch,
        })
        self.env.set(**settings)

    def push(self, repository: str, tag: str, variant: str | None = None) -> str:
        return push_distinct_image(self.registry, self.workdir, repository, tag, variant=variant)

    def watch(self) -> list[dict]:
        """One run of the watch timer; the messages it queued (taken off the queue)."""
        monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
        return [message.payload for message in self.queue.take()]

    def ref(self, repository: str, digest: str) -> str:
        return f"{self.registry.address}/{repository}@{digest}"


@pytest.fixture
def monitor(scanner_env, registry, azurite: Azurite, tmp_path) -> Iterator[Monitor]:
    queue = TriggerQueue(azurite.connection_string)
    scanner_env.set(AzureWebJobsStorage=azurite.connection_string, SCAN_QUEUE_NAME=queue.name)
    yield Monitor(scanner_env, registry, queue, tmp_path)
    queue.close()


def test_first_run_is_bounded_then_each_new_digest_is_queued_exactly_once(monitor: Monitor, audits: Audits):
    repo = "watched/app"
    digests = {tag: monitor.push(repo, tag) for tag in ("1.0", "1.1", "1.2", "latest")}
    monitor.configure([{"repository": f"{monitor.registry.address}/{repo}", "tags": r"^\d+\.\d+$"}],
                      WATCH_MAX_NEW_TAGS="2")

    first = monitor.watch()  # first run: the 2 newest (version order); 1.0 set aside
    assert [(m["tag"], m["image-full-name"], m["trigger"]) for m in first] == [
        ("1.2", monitor.ref(repo, digests["1.2"]), "watch"),
        ("1.1", monitor.ref(repo, digests["1.1"]), "watch"),
    ]
    assert monitor.watch() == []  # nothing new

    digests["1.3"] = monitor.push(repo, "1.3")  # pushed after the first run
    (new,) = monitor.watch()
    assert (new["tag"], new["image-full-name"]) == ("1.3", monitor.ref(repo, digests["1.3"]))
    assert monitor.watch() == []  # exactly once

    repushed = monitor.push(repo, "1.0", variant="rebuilt 1.0")  # same tag, new digest: new
    assert repushed != digests["1.0"]
    (again,) = monitor.watch()
    assert (again["tag"], again["image-full-name"]) == ("1.0", monitor.ref(repo, repushed))
    assert monitor.watch() == []


def test_a_queued_tag_is_scanned_and_labelled_with_its_tag(monitor: Monitor, audits: Audits, scanner_env):
    repo = "labelled/app"
    digest = monitor.push(repo, "2.0")
    monitor.configure([{"repository": f"{monitor.registry.address}/{repo}"}])
    monitor.queue.take()
    monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
    (message,) = monitor.queue.take()
    assert monitor.queue.deliver(message, REPO_ROOT) == []
    meta = audits.json(next(n for n in audits.names() if n.endswith(f"{message.payload['image-scan-id']}/meta")))
    assert meta["audit-result"] == "succeeded"
    assert meta["image"] == f"{monitor.registry.address}/{repo}:2.0@{digest}"
    assert (meta["image-digest"], meta["trigger"]) == (digest, "watch")
    assert meta["vulnerabilities"]["critical"] == 1  # the sample's CVE-2099-0001, found through the loop


def test_all_takes_every_tag_on_the_first_run(monitor: Monitor, audits: Audits):
    repo = "everything/app"
    for tag in ("a", "b", "c"):
        monitor.push(repo, tag)
    monitor.configure([{"repository": f"{monitor.registry.address}/{repo}"}], WATCH_MAX_NEW_TAGS="all")
    assert sorted(m["tag"] for m in monitor.watch()) == ["a", "b", "c"]


def test_a_registry_failure_is_reported_and_other_repositories_go_on(monitor: Monitor, audits: Audits):
    monitor.push("present/app", "1.0")
    monitor.configure([
        {"repository": f"{monitor.registry.address}/absent/app"},
        {"repository": f"{monitor.registry.address}/present/app"},
    ])
    results = monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
    assert [(r.repository.split("/", 1)[1], len(r.enqueued), r.error is not None) for r in results] == [
        ("absent/app", 0, True), ("present/app", 1, False)]
    assert "404" in (results[0].error or "")


# -- Event Grid ------------------------------------------------------------------


def test_image_pushed_event_enqueues_the_digest_labelled_with_its_tag(monitor: Monitor, audits: Audits):
    repo = "pushed/app"
    digest = monitor.push(repo, "3.1")
    monitor.configure([])
    when = datetime(2026, 11, 22, 12, 30, 5, tzinfo=timezone.utc)
    event = image_pushed_event(monitor.registry.address, repo, digest, "3.1", event_id="0d1e2f", when=when)
    quarantined: list[str] = []

    assert monitor_handlers.on_image_pushed(event, quarantined.append, REPO_ROOT) == "push-0d1e2f"
    (message,) = monitor.queue.take()
    assert message.envelope == {
        "headers": {"creation-time": int(when.timestamp()), "payload-version": "1"},
        "payload": {"image-scan-id": "push-0d1e2f", "image-full-name": monitor.ref(repo, digest),
                    "tag": "3.1", "trigger": "event"},
    }
    # Event Grid delivers at least once: the same event again queues nothing.
    assert monitor_handlers.on_image_pushed(event, quarantined.append, REPO_ROOT) is None
    assert monitor.queue.take() == [] and quarantined == []

    assert monitor.queue.deliver(message, REPO_ROOT) == []
    meta = audits.json(f"trivy-{monitor.env.short_id}/20261122-123005-push-0d1e2f/meta")
    assert (meta["audit-result"], meta["trigger"], meta["image-digest"]) == ("succeeded", "event", digest)
    assert meta["image"] == f"{monitor.registry.address}/{repo}:3.1@{digest}"


def test_events_that_ask_for_no_scan_are_ignored(monitor: Monitor, audits: Audits):
    repo = "ignored/app"
    digest = monitor.push(repo, "1.0")
    monitor.configure([{"repository": f"{monitor.registry.address}/{repo}", "tags": r"^\d+\.\d+$"}])
    host = monitor.registry.address
    quarantined: list[str] = []
    for event in (
        image_pushed_event(host, repo, digest, None),  # a platform manifest, pushed by digest
        image_pushed_event(host, repo, digest, "nightly"),  # watched repository, pattern not matched
        image_pushed_event(host, repo, digest, f"sha256-{'a' * 64}.sig"),  # a signature
        image_pushed_event(host, repo, digest, "1.0", event_type="Microsoft.ContainerRegistry.ImageDeleted"),
    ):
        assert monitor_handlers.on_image_pushed(event, quarantined.append, REPO_ROOT) is None
    assert monitor.queue.take() == [] and quarantined == []


def test_a_malformed_event_is_quarantined_with_its_reason(monitor: Monitor, audits: Audits):
    monitor.configure([])
    event = image_pushed_event("", "team/app", "sha256:" + "b" * 64, "1.0", event_id="bad-1",
                               data={"target": {"repository": "team/app", "digest": "sha256:" + "b" * 64,
                                                "tag": "1.0"}, "request": {"method": "PUT"}})
    quarantined: list[str] = []
    assert monitor_handlers.on_image_pushed(event, quarantined.append, REPO_ROOT) is None
    (record,) = [json.loads(text) for text in quarantined]
    assert (record["failure-reason"], record["failure-kind"], record["message-id"]) == (
        "invalid-data.request.host", "permanent", "bad-1")
    assert json.loads(record["original-message"])["data"]["target"]["repository"] == "team/app"
    assert monitor.queue.take() == []


def test_a_push_from_a_registry_not_allowed_is_quarantined_with_that_reason(monitor: Monitor, audits: Audits):
    monitor.configure([], ALLOWED_REGISTRIES=f"{monitor.registry.address}")
    event = image_pushed_event("other.example.com", "team/app", "sha256:" + "c" * 64, "1.0", event_id="far-1")
    quarantined: list[str] = []
    assert monitor_handlers.on_image_pushed(event, quarantined.append, REPO_ROOT) is None
    (record,) = [json.loads(text) for text in quarantined]
    assert (record["failure-reason"], record["failure-kind"]) == ("registry-not-allowed", "permanent")
    assert "data.request.host: registry 'other.example.com' is not allowed" in record["reason"]
    assert monitor.queue.take() == []


# -- the watch list's validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ({"repository": "myacr.azurecr.io/team/app:1.0"}, "watch.0.repository", "without tag or digest"),
        ({"repository": "Not A Repo"}, "watch.0.repository", "white space"),
        ({"repository": "myacr.azurecr.io/team/app", "tags": "^(v"}, "watch.0.tags", "not a valid regular"),
        ({"repository": "myacr.azurecr.io/team/app", "platform": "amd64"}, "watch.0.platform", "pattern"),
        ({"repository": "myacr.azurecr.io/team/app", "tag": "x"}, "watch.0.tag", "Extra inputs"),
    ],
)
def test_watch_entries_are_validated(scanner_env, entry, field, says):
    scanner_env.write_config({"watch": [entry]})
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    (problem,) = caught.value.problems
    assert f": {field}: " in problem and says in problem


def test_watch_max_new_tags_allows_a_count_or_all(scanner_env):
    scanner_env.set(WATCH_MAX_NEW_TAGS="all")
    assert load_config().settings.watch_max_new_tags == "all"
    scanner_env.set(WATCH_MAX_NEW_TAGS="-1")
    with pytest.raises(ConfigurationError, match="WATCH_MAX_NEW_TAGS: must be 0 or more, or 'all'"):
        load_config()


def test_newest_is_the_highest_version_not_the_lexical_last():
    from scanner_core.monitor.watch import version_key

    tags = ["v1.9.0", "v1.10.0", "v1.2.3", "v2.0.0-rc1", "v2.0.0"]
    assert sorted(tags, key=version_key)[-2:] == ["v2.0.0", "v2.0.0-rc1"]
    assert sorted(tags, key=version_key)[:3] == ["v1.2.3", "v1.9.0", "v1.10.0"]


def test_the_cli_runs_one_watch_and_one_rescan(monitor: Monitor, audits: Audits, capsys):
    from scanner_core.cli import main

    repo = "cli/app"
    monitor.push(repo, "1.0")
    monitor.configure([{"repository": f"{monitor.registry.address}/{repo}"}])
    assert main(["watch"]) == 0
    assert f"{monitor.registry.address}/{repo}: 1 queued, 0 set aside" in capsys.readouterr().out
    assert len(monitor.queue.take()) == 1
    assert main(["rescan"]) == 0
    assert "0 of 0 images queued for a rescan (DB 2026-11-01T00:00:00Z)" in capsys.readouterr().out


def test_the_monitor_functions_are_wired_from_settings(monkeypatch):
    import azure.functions as func

    from scanner_core.functions import monitor_loop

    app = func.FunctionApp()
    app.register_functions(monitor_loop.blueprint)
    functions = {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in app.get_functions()}
    assert [(b["type"], b["schedule"]) for b in functions["watch_repositories"]] == [
        ("timerTrigger", "0 */15 * * * *")]
    assert [(b["type"], b["schedule"]) for b in functions["rescan_images"]] == [("timerTrigger", "0 0 3 * * *")]
    pushed = {b["name"]: b for b in functions["image_pushed"]}
    assert pushed["event"]["type"] == "eventGridTrigger"
    assert (pushed["quarantine"]["type"], pushed["quarantine"]["queueName"]) == ("queue", "trivy-scan-requests-poison")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"image-full-name": "r.example/team/app:1.0", "tag": "2.0"}, "invalid-payload.tag"),  # no digest
        ({"image-full-name": f"r.example/team/app:1.0@sha256:{'e' * 64}", "tag": "2.0"}, "invalid-payload.tag"),
        ({"image-full-name": f"r.example/team/app@sha256:{'e' * 64}", "tag": "-bad"}, "invalid-payload.tag"),
        ({"image-full-name": "r.example/team/app:1.0", "trigger": "cron"}, "invalid-payload.trigger"),
    ],
)
def test_a_bad_tag_label_or_trigger_is_quarantined(monitor: Monitor, audits: Audits, payload, reason):
    from tests.support.monitor import QueuedMessage

    body = json.dumps({"headers": {"creation-time": 1795300000, "payload-version": "1"},
                       "payload": {"image-scan-id": "labelled", **payload}})
    (record,) = [json.loads(text) for text in monitor.queue.deliver(QueuedMessage("m-1", body, None), REPO_ROOT)]
    assert record["failure-reason"] == reason and audits.names() == []
