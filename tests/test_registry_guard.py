"""The registry allowlist and the address guard (scanner_core/registry/guard.py).

No test here sends traffic to a link-local or private address: names resolve
through the guard's resolver hook (``hosts``, never /etc/hosts), "refused" names
resolve to 127.0.0.2 (loopback, not listed) or to 169.254.169.254, and every
connect of the process is recorded and refused unless it goes to 127.0.0.1
(``ConnectionRecorder``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from azure.functions.queue import QueueMessage

from scanner_core.config import load_config
from scanner_core.errors import ConfigurationError
from scanner_core.functions import handlers as functions
from scanner_core.functions import request_scan, request_scan_by_path
from scanner_core.monitor.events import IMAGE_PUSHED, parse_image_pushed
from scanner_core.queue import build_message
from scanner_core.registry import (
    RegistryApi,
    RegistryNotAllowed,
    acr_refresh_token,
    current_guard,
    parse_allowlist,
    use_resolver,
)
from tests.conftest import REPO_ROOT
from tests.support.connections import ConnectionRecorder
from tests.support.loopback_http import LoopbackHttpServer
from tests.test_http_api import error_of, http, make_api, queued


@pytest.fixture
def hosts() -> Iterator[dict[str, list[str]]]:
    """name -> addresses for the guard's resolver; any other name does not resolve (no real DNS)."""
    mapping: dict[str, list[str]] = {}

    def resolver(host: str) -> list[str]:
        if host in mapping:
            return mapping[host]
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: not in the test's hosts")

    use_resolver(resolver)
    yield mapping
    use_resolver(None)


def refused(registry: str) -> str:
    with pytest.raises(RegistryNotAllowed) as caught:
        current_guard().check_registry(registry, "image")
    assert caught.value.reason == "registry-not-allowed" and caught.value.field == "image"
    return caught.value.detail


def test_the_default_allows_public_registries_and_refuses_loopback_and_private(monkeypatch, hosts):
    monkeypatch.delenv("ALLOWED_REGISTRIES")  # the suite lists its loopback registries (conftest.py)
    hosts.update({"registry.example.com": ["93.184.216.34"], "internal.test": ["10.1.2.3"],
                  "sneaky.test": ["93.184.216.34", "127.0.0.2"]})
    current_guard().check_registry("registry.example.com", "image")
    current_guard().check_registry("93.184.216.34:5000", "image")
    for registry in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000", "10.0.0.5", "192.168.1.1:443",
                     "internal.test", "sneaky.test:5000"):
        assert "must be listed in ALLOWED_REGISTRIES" in refused(registry), registry


def test_entries_hosts_ports_and_wildcards(monkeypatch, hosts):
    hosts.update({"team.azurecr.io": ["10.0.0.4"], "azurecr.io": ["93.184.216.34"],
                  "evilazurecr.io": ["93.184.216.34"], "registry.example.com": ["93.184.216.34"]})
    monkeypatch.setenv("ALLOWED_REGISTRIES", "*.azurecr.io, registry.example.com:5000,127.0.0.1")
    guard = current_guard()
    guard.check_registry("team.azurecr.io", "image")  # a private endpoint: listed by its wildcard
    guard.check_registry("registry.example.com:5000", "image")
    guard.check_registry("127.0.0.1:5001", "image")  # an entry without a port: any port
    for registry in ("azurecr.io", "evilazurecr.io", "registry.example.com", "registry.example.com:5001"):
        assert "is not allowed: ALLOWED_REGISTRIES lists *.azurecr.io, registry.example.com:5000" in refused(registry)
    for bad in ("*:443", "https://x.io/v2", "a.io:port", "*.*.io"):
        with pytest.raises(ValueError, match="must be a registry host"):
            parse_allowlist(bad)


def test_a_star_keeps_the_default_and_lists_nothing_private(monkeypatch, hosts):
    hosts.update({"registry.example.com": ["93.184.216.34"], "internal.test": ["10.1.2.3"]})
    monkeypatch.setenv("ALLOWED_REGISTRIES", "*,registry.internal:5000")
    hosts["registry.internal"] = ["10.9.9.9"]
    current_guard().check_registry("registry.example.com", "image")
    current_guard().check_registry("registry.internal:5000", "image")
    assert "must be listed in ALLOWED_REGISTRIES" in refused("internal.test")
    assert "must be listed in ALLOWED_REGISTRIES" in refused("registry.internal:5001")


def test_an_invalid_allowlist_stops_start_up_naming_the_setting(scanner_env):
    scanner_env.set(ALLOWED_REGISTRIES="registry.example.com,*:443")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "ALLOWED_REGISTRIES" in str(caught.value) and "'*:443'" in str(caught.value)


def test_link_local_metadata_and_the_identity_endpoint_are_refused_even_when_listed(monkeypatch, hosts):
    hosts.update({"metadata.test": ["169.254.169.254"], "mapped.test": ["::ffff:169.254.169.254"]})
    monkeypatch.setenv("ALLOWED_REGISTRIES",
                       "169.254.169.254,[fe80::1],[fd00:ec2::254],metadata.test,mapped.test,127.0.0.1")
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
    for registry in ("169.254.169.254", "[fe80::1]:80", "[fd00:ec2::254]", "metadata.test:443", "mapped.test"):
        assert "link-local or cloud metadata address, never contacted" in refused(registry), registry
    assert "managed-identity endpoint" in refused("127.0.0.1:41741")
    monkeypatch.setenv("MSI_ENDPOINT", "http://127.0.0.1/msi/token")  # port 80: a registry without a port
    assert "managed-identity endpoint" in refused("127.0.0.1")
    current_guard().check_registry("127.0.0.1:5000", "image")  # the same host on another port is listed


def test_db_mirrors_are_the_operators_but_never_at_a_metadata_address(monkeypatch, hosts):
    monkeypatch.delenv("ALLOWED_REGISTRIES")
    monkeypatch.setenv("TRIVY_DB_REPOSITORY", "127.0.0.2:5000/trivy-db:2")
    current_guard().check_operator_registry("127.0.0.2:5000/trivy-db:2", "TRIVY_DB_REPOSITORY")
    with pytest.raises(RegistryNotAllowed, match="never contacted"):
        current_guard().check_operator_registry("169.254.169.254/trivy-db:2", "TRIVY_DB_REPOSITORY")


@pytest.mark.parametrize(
    "image, resolves_to",
    [
        ("169.254.169.254/latest/meta-data:1", None),
        ("internal.test/team/app:1.0", "127.0.0.2"),  # a name resolving to loopback that is not listed
        ("metadata.test/team/app:1.0", "169.254.169.254"),
        ("registry.example.org/team/app:1.0", "93.184.216.34"),  # public, but not in the allowlist
    ],
)
def test_a_queued_request_for_a_refused_registry_is_quarantined_without_any_connection(
    scanner_env, audits, hosts, image, resolves_to
):
    if resolves_to:
        hosts[image.split("/", 1)[0]] = [resolves_to]
    if image.startswith("registry.example.org"):
        scanner_env.set(ALLOWED_REGISTRIES="127.0.0.1,*.azurecr.io")
    body = build_message(image, "refused-1").to_text()
    quarantined: list[str] = []
    with ConnectionRecorder() as seen:  # Azurite is on 127.0.0.1; anything else is refused and recorded
        functions.on_scan_message(QueueMessage(id="m-1", body=body.encode(), dequeue_count=1), quarantined.append,
                                  REPO_ROOT, lambda *_: None)
    assert seen.hosts() <= {"127.0.0.1"}
    (record,) = [json.loads(text) for text in quarantined]
    assert (record["failure-reason"], record["failure-kind"]) == ("registry-not-allowed", "permanent")
    (meta_name,) = [name for name in audits.names() if name.endswith("-refused-1/meta")]
    meta = audits.json(meta_name)
    assert (meta["audit-result"], meta["failure-reason"], meta["failure-kind"]) == (
        "audit-failed", "registry-not-allowed", "permanent")
    assert meta["failure-description"].startswith("payload.image-full-name: ")
    assert "scan-duration-ms" not in meta  # trivy never started


def test_the_http_api_answers_400_naming_the_field(scanner_env, azurite, hosts):
    hosts["internal.test"] = ["127.0.0.2"]
    api = make_api(azurite)
    with ConnectionRecorder() as seen:
        by_body = error_of(request_scan(http("POST", "scans", body={"image": "169.254.169.254/x:1"}), api), 400)
        by_path = error_of(request_scan_by_path(
            http("POST", "x", route_params={"name": "internal.test/team/app", "tag": "1.0"}), api), 400)
    assert (by_body["code"], by_body["field"]) == ("registry-not-allowed", "image")
    assert (by_path["code"], by_path["field"]) == ("registry-not-allowed", "name")
    assert "internal.test (127.0.0.2)" in by_path["message"] and seen.hosts() <= {"127.0.0.1"}
    assert queued(api) == []


class _Redirecting(LoopbackHttpServer):
    """A registry double on 127.0.0.1 (listed) that redirects, or names token realms, elsewhere."""

    def __init__(self, targets: dict[str, tuple[int, dict[str, str]]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, headers = targets.get(self.path, (200, {}))
                body = json.dumps({"schemaVersion": 2, "layers": [{"size": 7}]}).encode() if status == 200 else b""
                self.send_response(status)
                for name, value in {"Content-Type": "application/vnd.oci.image.manifest.v1+json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._serve(Handler, "redirecting-registry")


def test_redirects_and_token_realms_to_refused_addresses_are_refused(hosts):
    hosts["internal.test"] = ["127.0.0.2"]
    targets = {
        "/v2/a/manifests/1": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/v2/b/manifests/1": (307, {"Location": "http://internal.test:8080/v2/b/manifests/1"}),
        "/v2/c/manifests/1": (401, {"WWW-Authenticate": 'Bearer realm="http://169.254.169.254/token",service="x"'}),
        "/v2/d/manifests/1": (302, {"Location": "/v2/e/manifests/1"}),  # the positive control
    }
    with _Redirecting(targets) as server, ConnectionRecorder() as seen:
        address = server.base_url.removeprefix("http://")
        with RegistryApi(address, plain_http=True, timeout=5) as api:
            for repository in ("a", "b", "c"):
                with pytest.raises(RegistryNotAllowed):
                    api.manifest(repository, "1")
            assert api.manifest("d", "1").compressed_size == 7
    assert seen.hosts() == {"127.0.0.1"}


def test_the_watch_list_and_event_grid_name_the_field(scanner_env, hosts):
    scanner_env.set(ALLOWED_REGISTRIES="127.0.0.1")
    scanner_env.write_config({"registries": [], "watch": [{"repository": "registry.example.org/team/app"}]})
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "repository" in str(caught.value) and "'registry.example.org' is not allowed" in str(caught.value)
    data = {"target": {"repository": "x", "tag": "1", "digest": "sha256:" + "a" * 64},
            "request": {"host": "169.254.169.254"}}
    with pytest.raises(RegistryNotAllowed) as event:
        parse_image_pushed(IMAGE_PUSHED, "e-1", data, None)
    assert event.value.field == "data.request.host"


def test_no_azure_ad_token_is_asked_for_or_sent_to_a_registry_not_allowed(monkeypatch, hosts):
    monkeypatch.setenv("ALLOWED_REGISTRIES", "127.0.0.1")
    hosts["evil.azurecr.io"] = ["93.184.216.34"]
    with ConnectionRecorder() as seen, pytest.raises(RegistryNotAllowed):
        acr_refresh_token("evil.azurecr.io")
    assert seen.attempts == []


def test_a_name_that_rebinds_between_the_check_and_the_connection_is_refused_at_connect_time():
    """The request's check sees a public address; the connection resolves again and meets loopback."""
    answers = [["93.184.216.34"], ["127.0.0.2"]]
    use_resolver(lambda host: answers.pop(0) if answers else ["127.0.0.2"])
    try:
        with ConnectionRecorder() as seen, RegistryApi("rebind.test:8080", plain_http=True, timeout=5) as api:
            with pytest.raises(RegistryNotAllowed, match=r"rebind.test \(127.0.0.2\):8080 is not a public address"):
                api.manifest("team/app", "1.0")
    finally:
        use_resolver(None)
    assert answers == [] and seen.attempts == []
