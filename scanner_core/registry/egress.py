"""trivy's egress under the guard (issue 23): a loopback proxy for one trivy run.

trivy resolves and connects by itself, follows redirects and fetches Bearer token realms: a
registry that answered a blob GET with ``307 Location: http://<refused address>/`` made trivy
fetch from an address the guard refuses. So a scan's trivy gets ``HTTPS_PROXY``/``HTTP_PROXY``
pointing at this proxy, which:

* resolves every name itself and connects only to addresses the guard checked
  (``RegistryGuard.checked_addresses``): trivy never resolves a registry's name, so there is no
  window between a check and a connection;
* ends trivy's TLS with a certificate for the registry's name (``egress_tls.py``; trivy trusts it
  through ``SSL_CERT_FILE``) and opens its own TLS to the registry, verified as trivy would
  (skipped only for a registry configured ``insecure``), so it sees every response;
* refuses a redirect (``Location``) or a token realm (``WWW-Authenticate``) that leads to a
  refused address before trivy sees it, answering ``403`` and recording why: the scan then fails
  as ``registry-not-allowed``, permanent.

Go's proxy rule sends everything through it except loopback targets (``localhost``, 127/8,
``::1``), which Go always reaches directly: a registry named by a loopback address is contacted
only when ``ALLOWED_REGISTRIES`` lists it, and a redirect or realm to a loopback address is
refused here unless listed, before trivy could follow it.
"""

from __future__ import annotations

import functools
import http.client
import os
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import _SocketWriter  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

from .egress_tls import server_context, trust_bundle
from .guard import Address, RegistryNotAllowed, current_guard
from .guarded_http import default_port

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                         "te", "trailer", "transfer-encoding", "upgrade"})  # fmt: skip
_CHUNK = 1024 * 1024
_TIMEOUT_SECONDS = 60.0
_REALM = re.compile(r'realm="([^"]*)"', re.IGNORECASE)


class EgressProxy(ThreadingHTTPServer):
    """One trivy run's proxy on ``127.0.0.1``; ``refusals`` says what it refused, and why."""

    daemon_threads = True

    def __init__(self, insecure_hosts: frozenset[str] = frozenset()) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.insecure_hosts = insecure_hosts
        self.refusals: list[str] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refusals.append(reason)

    def environment(self, no_proxy: tuple[str, ...] = ()) -> dict[str, str]:
        """What trivy's environment needs to go through the proxy (``no_proxy``: hosts the
        operator configured for trivy itself, such as ``TRIVY_SERVER``, reached directly)."""
        bypass = ",".join(no_proxy)
        return {"HTTPS_PROXY": self.url, "https_proxy": self.url, "HTTP_PROXY": self.url, "http_proxy": self.url,
                "NO_PROXY": bypass, "no_proxy": bypass, "SSL_CERT_FILE": str(trust_bundle())}  # fmt: skip


_POLL_SECONDS = 0.01


@contextmanager
def egress_proxy(insecure_hosts: frozenset[str] = frozenset()) -> Iterator[EgressProxy]:
    """A running proxy for the duration of the block (its thread serves, then it is closed)."""
    proxy = EgressProxy(insecure_hosts)
    # shutdown() waits for serve_forever's next poll: at the default 0.5 s that was ~250 ms on
    # average between trivy's exit and the report's upload (issue 26.3; bench/scan_requests.py).
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": _POLL_SECONDS},
                              name="trivy-egress", daemon=True)  # fmt: skip
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=5)


class _PinnedConnect:
    """``connect`` to an address the guard checked (TLS still names the host); through the
    operator's own proxy (``HTTPS_PROXY``/``HTTP_PROXY`` of the app) when one is configured."""

    host: str
    port: int
    timeout: float
    sock: socket.socket
    addresses: list[Address]
    via: tuple[str, int] | None
    tls: ssl.SSLContext | None = None
    _tunnel_host: str | None

    def connect(self) -> None:
        targets = [self.via] if self.via is not None else [(str(a), self.port) for a in self.addresses]
        error: OSError | None = None
        for target in targets:
            try:
                self.sock = socket.create_connection(target, self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                break
            except OSError as failed:
                error = failed
        else:
            raise error or OSError(f"{self.host} has no address")
        if self._tunnel_host:
            self._tunnel()  # type: ignore[attr-defined]
        if self.tls is not None:
            self.sock = self.tls.wrap_socket(self.sock, server_hostname=self._tunnel_host or self.host)


class _PinnedHTTP(_PinnedConnect, http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[Address], via: tuple[str, int] | None) -> None:
        super().__init__(host, port, timeout=_TIMEOUT_SECONDS)
        self.addresses, self.via = addresses, via


class _PinnedHTTPS(_PinnedConnect, http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[Address], via: tuple[str, int] | None,
                 tls: ssl.SSLContext) -> None:  # fmt: skip
        super().__init__(host, port, timeout=_TIMEOUT_SECONDS, context=tls)
        self.addresses, self.via, self.tls = addresses, via, tls
        if via is not None:
            self.set_tunnel(host, port)  # CONNECT through the operator's proxy, then TLS to the registry
            self.host, self.port = via


@functools.lru_cache(maxsize=8)
def _client_context(verify: bool, roots: tuple[str | None, str | None]) -> ssl.SSLContext:
    """The proxy's TLS to registries: verified against the roots the app trusts (``SSL_CERT_FILE``,
    ``SSL_CERT_DIR``, else the system's), or not at all for a registry configured ``insecure``.
    Made once per value (loading the roots costs ~20 ms)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _operator_proxy(scheme: str, host: str) -> tuple[str, int] | None:
    """The app's own egress proxy for ``scheme`` (``HTTPS_PROXY``, ``HTTP_PROXY``; ``NO_PROXY`` honoured)."""
    proxy = getproxies_environment().get(scheme)
    if not proxy or proxy_bypass_environment(host):
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return (parts.hostname, parts.port or 80) if parts.hostname else None


class _Handler(BaseHTTPRequestHandler):
    server: EgressProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms stalls
    tunnel: tuple[str, int] | None = None
    upstream: _PinnedHTTP | _PinnedHTTPS | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return  # request lines may carry tokens; refusals are reported through the scan's failure

    # -- CONNECT: a TLS tunnel, ended here so that its responses can be checked ------------------

    def do_CONNECT(self) -> None:  # noqa: N802 - the HTTP method's name
        host, _, port_text = self.path.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
            self.upstream = self._open("https", host, port)
        except RegistryNotAllowed as refused:
            return self._refuse(str(refused))
        except (OSError, ValueError, ssl.SSLError) as error:  # a client may then try plain HTTP (insecure)
            self.send_error(502, f"cannot reach {host}: {type(error).__name__}")
            return None
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.connection = server_context(host).wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.wfile = _SocketWriter(self.connection)
        self.tunnel = (host, port)
        self.close_connection = False
        return None

    # -- every other method: forwarded, its answer checked ---------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        self._forward()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def _forward(self) -> None:
        try:
            scheme, host, port, path = self._target()
            if self.upstream is None or self.tunnel is None:  # plain HTTP: one connection per request
                self.upstream = self._open(scheme, host, port)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            url = f"{scheme}://{host}:{port}{path}"
            # Plain HTTP through the operator's proxy: the request line carries the absolute URL.
            response = self._request(url if scheme == "http" and self.upstream.via is not None else path, body, headers)
            self._check_answer(response, url)
        except RegistryNotAllowed as refused:
            self._refuse(str(refused))
            return
        except (OSError, ValueError, http.client.HTTPException) as error:
            self.send_error(502, f"the registry did not answer: {type(error).__name__}")
            self.close_connection = True
            return
        self._relay(response)

    def _target(self) -> tuple[str, str, int, str]:
        if self.tunnel is not None:
            return "https", self.tunnel[0], self.tunnel[1], self.path
        parts = urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("a proxy request names an absolute http:// URL")
        path = parts.path or "/"
        return "http", parts.hostname, parts.port or 80, path + (f"?{parts.query}" if parts.query else "")

    def _open(self, scheme: str, host: str, port: int) -> _PinnedHTTP | _PinnedHTTPS:
        addresses = current_guard().checked_addresses(host, port, "registry")  # RegistryNotAllowed
        if not addresses:
            raise OSError(f"{host} does not resolve")
        via = _operator_proxy(scheme, host)
        connection: _PinnedHTTP | _PinnedHTTPS
        if scheme == "https":
            insecure = host in self.server.insecure_hosts or f"{host}:{port}" in self.server.insecure_hosts
            roots = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            connection = _PinnedHTTPS(host, port, addresses, via, _client_context(not insecure, roots))
        else:
            connection = _PinnedHTTP(host, port, addresses, via)
        connection.connect()
        return connection

    def _request(self, path: str, body: bytes | None, headers: dict[str, str]) -> http.client.HTTPResponse:
        assert self.upstream is not None
        for attempt in (1, 2):
            try:
                self.upstream.request(self.command, path, body=body, headers=headers)
                return self.upstream.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt == 2 or self.tunnel is None:
                    raise
                self.upstream.close()  # the registry closed a kept-alive connection: once more
                self.upstream.connect()
        raise AssertionError("unreachable")

    def _check_answer(self, response: http.client.HTTPResponse, url: str) -> None:
        """A redirect or a token realm that leads to a refused address is refused here."""
        leads_to = []
        if 300 <= response.status < 400 and (location := response.getheader("Location")):
            leads_to.append(urljoin(url, location))
        if response.status == 401 and (realm := _REALM.search(response.getheader("WWW-Authenticate") or "")):
            leads_to.append(urljoin(url, realm.group(1)))
        for target in leads_to:
            parts = urlsplit(target)
            if parts.scheme in ("http", "https") and parts.hostname:
                try:
                    current_guard().checked_addresses(parts.hostname, parts.port or default_port(parts.scheme),
                                                      "registry")  # fmt: skip
                except RegistryNotAllowed:
                    response.close()
                    raise

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        chunked = length is None and not bodiless
        if length is not None:
            self.send_header("Content-Length", length)
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not bodiless:
            buffer = memoryview(bytearray(_CHUNK))  # one buffer per answer: layers are relayed, not copied
            while count := response.readinto(buffer):
                if chunked:
                    self.wfile.write(b"%x\r\n" % count)
                self.wfile.write(buffer[:count])
                if chunked:
                    self.wfile.write(b"\r\n")
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        response.close()
        if response.will_close and self.tunnel is not None and self.upstream is not None:
            self.upstream.close()  # reconnected on the next request of the tunnel
        if self.tunnel is None and self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def _refuse(self, reason: str) -> None:
        self.server.refuse(reason)
        body = f"registry-not-allowed: {reason}\n".encode()
        self.send_response(403, "Forbidden by the registry guard")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.upstream is not None:
                self.upstream.close()
