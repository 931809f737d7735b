"""An endless registry cannot starve the watch (issue 23, item 6): a registry double on
loopback that answers every ``tags/list`` with another ``Link: rel="next"`` is the FIRST
watched entry, the real registry with a pushed image the SECOND. One run of the watch
timer stops the first at ``WATCH_MAX_PAGES``, still queues the second's new digest, and the
heartbeat (the real timer handler) shows the cap hit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.config import load_config
from scanner_core.errors import ConfigurationError
from scanner_core.functions import handlers, monitor_handlers
from tests.conftest import REPO_ROOT, Audits, ScannerEnvironment
from tests.support.azurite import Azurite
from tests.support.loopback_http import LoopbackHttpServer
from tests.support.monitor import TriggerQueue, push_distinct_image
from tests.support.registry import Registry

PAGE_TAGS = 50
SAFETY_PAGES = 300  # the double ends its list here, so a watch without bounds fails instead of running forever


class EndlessRegistry(LoopbackHttpServer):
    """``GET /v2/<repo>/tags/list``: 50 tags and a ``next`` link, page after page; counts the pages served."""

    def __init__(self) -> None:
        self.pages_served = 0
        lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if not url.path.endswith("/tags/list"):
                    self.send_error(404)
                    return
                with lock:
                    double.pages_served += 1
                    page = double.pages_served
                repository = url.path.removeprefix("/v2/").removesuffix("/tags/list")
                last = parse_qs(url.query).get("last", ["start"])[0]
                body = json.dumps({"name": repository, "tags": [f"{last}-{i}" for i in range(PAGE_TAGS)]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if page < SAFETY_PAGES:
                    self.send_header("Link", f'</v2/{repository}/tags/list?n={PAGE_TAGS}&last=p{page}>; rel="next"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._serve(Handler, "endless-registry")

    @property
    def address(self) -> str:
        return self.base_url.removeprefix("http://")


@pytest.fixture
def endless() -> Iterator[EndlessRegistry]:
    with EndlessRegistry() as server:
        yield server


def test_an_endless_registry_is_capped_and_the_next_entry_still_gets_its_turn(
    scanner_env: ScannerEnvironment, registry: Registry, azurite: Azurite, audits: Audits,
    endless: EndlessRegistry, tmp_path,
):
    digest = push_distinct_image(registry, tmp_path, "bounded/app", "1.0")
    queue = TriggerQueue(azurite.connection_string)
    scanner_env.set(AzureWebJobsStorage=azurite.connection_string, SCAN_QUEUE_NAME=queue.name,
                    WATCH_MAX_PAGES="5", WATCH_MAX_TAGS="1000", WATCH_RUN_SECONDS="60")
    endless_repository = f"{endless.address}/endless/app"
    scanner_env.write_config({
        "heartbeat-period": 60,
        "registries": [
            {"address": endless.address, "insecure": True},
            {"address": registry.address, "username": registry.username, "password": registry.password,
             "insecure": True},
        ],
        "watch": [{"repository": endless_repository, "tags": r"^\d+\.\d+$"},  # none of its tags: no HEADs
                  {"repository": f"{registry.address}/bounded/app"}],
    })

    first, second = monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)

    assert endless.pages_served == 5  # the cap: not one page more
    assert (first.capped, first.pages, first.tags_read, first.error) == ("pages", 5, 5 * PAGE_TAGS, None)
    assert (second.capped, second.error, [scanned for _, scanned, _ in second.enqueued]) == (None, None, [digest])
    (message,) = queue.take()
    assert message.payload["image-full-name"] == f"{registry.address}/bounded/app@{digest}"
    queue.close()

    handlers.on_heartbeat(TimerRequest(past_due=False), handlers.binding_settings(), REPO_ROOT)
    heartbeat = audits.json(f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta")
    assert heartbeat["watch"][endless_repository] | {"checked-at": None} == {
        "checked-at": None, "pages": 5, "tags": 5 * PAGE_TAGS, "enqueued": 0, "capped": "pages", "limit": 5}
    assert "capped" not in heartbeat["watch"][f"{registry.address}/bounded/app"]


def test_bounds_out_of_range_are_refused_naming_the_setting(scanner_env: ScannerEnvironment):
    scanner_env.set(WATCH_MAX_PAGES="0", WATCH_RUN_SECONDS="-1")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert any("WATCH_MAX_PAGES" in line and "greater than or equal to 1" in line for line in caught.value.problems)
    assert any("WATCH_RUN_SECONDS" in line and "greater than 0" in line for line in caught.value.problems)
