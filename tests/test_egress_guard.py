"""Issue 23, item 3: trivy's egress under the guard.

trivy pulls through the scanner's egress proxy (``registry/egress.py``), which resolves every
name itself, connects only to addresses the guard checked, and refuses a redirect or a token
realm that leads to a refused address before trivy can follow it. Real trivy, the real
``docker-registry`` (plain HTTP, htpasswd) named by host names that the guard's resolver hook
maps to loopback, a front of it that redirects blob GETs, and Azurite. Loopback only.
"""

from __future__ import annotations

import socket
import ssl
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.registry import use_resolver
from tests.conftest import SAMPLE_REPOSITORY, SAMPLE_TAG
from tests.support.loopback_http import LoopbackHttpServer
from tests.support.tls import self_signed

REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
NAMES = ("registry.test", "front.test")


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through the environment's proxy


def relay(handler: BaseHTTPRequestHandler, url: str) -> None:
    """Answers ``handler``'s request with what ``url`` answers (the test doubles' forwarding)."""
    request = urllib.request.Request(url, method=handler.command,
                                     headers={k: v for k, v in handler.headers.items() if k.lower() != "host"})
    try:
        with _DIRECT.open(request, timeout=10) as answer:
            status, headers, body = answer.status, answer.headers.items(), answer.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers.items(), error.read()
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class _Quiet(BaseHTTPRequestHandler):
    """The doubles' handlers: HTTP/1.1 (keep-alive, as registries speak), no request log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return


def relaying(upstream: str) -> type[_Quiet]:
    """A handler that answers every GET and HEAD with what ``upstream`` answers."""

    class Relaying(_Quiet):
        def do_GET(self) -> None:  # noqa: N802
            relay(self, f"{upstream}{self.path}")

        do_HEAD = do_GET  # noqa: N815

    return Relaying


class _Counting(LoopbackHttpServer):
    """Where the front redirects blobs to: a loopback port the guard refuses; counts what reaches it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._serve(Handler, "refused-target")


class _RedirectingFront(LoopbackHttpServer):
    """The registry, except that every blob GET is answered ``307`` to ``target``."""

    def __init__(self, registry_url: str, target: str) -> None:
        class Handler(relaying(registry_url)):  # type: ignore[misc]
            def do_GET(self) -> None:  # noqa: N802
                if "/blobs/" not in self.path:
                    super().do_GET()
                    return
                self.send_response(307)
                self.send_header("Location", f"{target}{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET  # noqa: N815

        self._serve(Handler, "redirecting-front")


@pytest.fixture
def named(scanner_env, registry, pushed_sample) -> Iterator[dict[str, str]]:
    """The registry as ``registry.test:<port>`` and its redirecting front as ``front.test:<port>``,
    both listed in ALLOWED_REGISTRIES by name only (so 127.0.0.1 itself is refused)."""
    refused_target = _Counting()
    front = _RedirectingFront(f"http://{registry.address}", refused_target.base_url)
    registry_port = registry.address.rsplit(":", 1)[1]
    front_port = front.base_url.rsplit(":", 1)[1]

    def resolver(host: str) -> list[str]:
        if host in NAMES:
            return ["127.0.0.1"]
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: not in the test's hosts")

    use_resolver(resolver)
    scanner_env.set(ALLOWED_REGISTRIES=",".join(NAMES))
    entries = [{"address": f"{name}:{port}", "username": registry.username, "password": registry.password,
                "insecure": True} for name, port in (("registry.test", registry_port), ("front.test", front_port))]
    scanner_env.write_config({"registries": entries})
    try:
        yield {"registry": f"registry.test:{registry_port}", "front": f"front.test:{front_port}",
               "target": refused_target}  # type: ignore[dict-item]
    finally:
        use_resolver(None)
        front.close()
        refused_target.close()


def scan(image: str, audit_id: str):
    return Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED, image=image))


def test_trivy_pulls_through_the_proxy_with_the_same_findings(named, pushed_sample, scanner_env, registry):
    through = scan(f"{named['registry']}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}", "egress-named")
    assert through.succeeded, through.meta.failure_description
    assert through.meta.image_digest == pushed_sample.digest
    scanner_env.set(EGRESS_GUARD="false", ALLOWED_REGISTRIES="*,127.0.0.1")
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}]})
    direct = scan(pushed_sample.reference, "egress-direct")  # 127.0.0.1: Go never proxies loopback
    assert direct.succeeded, direct.meta.failure_description
    assert {f.vulnerability_id for f in through.meta.details or []} == {
        f.vulnerability_id for f in direct.meta.details or []} != set()


def test_a_redirect_to_a_refused_address_ends_as_registry_not_allowed(named):
    outcome = scan(f"{named['front']}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}", "egress-redirect")
    assert not outcome.succeeded
    assert (outcome.meta.failure_reason, outcome.meta.failure_kind) == ("registry-not-allowed", "permanent")
    assert "127.0.0.1" in (outcome.meta.failure_description or "")
    assert named["target"].requests == []  # trivy never reached the refused address


class _OperatorProxy(LoopbackHttpServer):
    """A double of an operator's own forward proxy (RFC 9110 absolute-form requests; no CONNECT):
    counts what it forwards."""

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        outer = self

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802
                outer.forwarded.append(self.path)
                relay(self, self.path.replace("://registry.test:", "://127.0.0.1:", 1))  # it resolves names itself

            do_HEAD = do_GET  # noqa: N815

            def do_CONNECT(self) -> None:  # noqa: N802
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._serve(Handler, "operator-proxy")


def test_the_apps_own_proxy_still_carries_the_traffic(named, pushed_sample, monkeypatch):
    """With HTTP(S)_PROXY set for the app, the egress proxy forwards through it."""
    with _OperatorProxy() as operator:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, operator.base_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # Azurite
        outcome = scan(f"{named['registry']}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}", "egress-chained")
    assert outcome.succeeded, outcome.meta.failure_description
    assert any(path.startswith(f"http://{named['registry']}/v2/") for path in operator.forwarded)


class _TlsFront(LoopbackHttpServer):
    """The registry behind TLS with a certificate for ``secure.test`` (its own CA, made here)."""

    def __init__(self, registry_url: str, certificate: Path, key: Path) -> None:
        self._serve(relaying(registry_url), "tls-front")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)


def test_an_https_registry_is_verified_and_relayed_through_the_proxy(scanner_env, registry, pushed_sample,
                                                                     monkeypatch, tmp_path):  # fmt: skip
    """The production path: trivy's TLS ends at the proxy (its authority in trivy's bundle), and
    the proxy's own TLS to the registry is verified (a registry it cannot verify is not reached)."""
    tls = self_signed(tmp_path / "tls", "secure", hosts=("secure.test",))
    with _TlsFront(f"http://{registry.address}", tls.cert_path, tls.key_path) as front:
        port = front.base_url.rsplit(":", 1)[1]
        use_resolver(lambda host: ["127.0.0.1"] if host == "secure.test" else [])
        try:
            scanner_env.set(ALLOWED_REGISTRIES="secure.test")
            scanner_env.write_config({"registries": [{"address": f"secure.test:{port}", "username": registry.username,
                                                      "password": registry.password}]})  # fmt: skip
            reference = f"secure.test:{port}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}"
            untrusted = scan(reference, "egress-untrusted")  # the test's CA is nobody's root yet
            assert not untrusted.succeeded and untrusted.meta.failure_kind == "transient"
            monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert_path))  # the app trusts it (and so trivy)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.cert_path))
            trusted = scan(reference, "egress-https")
        finally:
            use_resolver(None)
    assert trusted.succeeded, trusted.meta.failure_description
    assert trusted.meta.image_digest == pushed_sample.digest and trusted.meta.details
