"""A small client of the OCI distribution API, for what trivy does not tell us
before a scan: manifests (sizes, platforms, digests) and tag lists.

It authenticates as docker clients do (distribution's token spec): a request
is sent anonymously first; a ``401`` names the scheme. ``Basic`` is answered
with the configured credentials; ``Bearer realm=...,service=...,scope=...`` by
fetching a token from the realm (with the credentials, if any) and retrying.
Tokens are kept per scope for the client's life. ``insecure`` registries are
tried over HTTPS without verification, then plain HTTP, as trivy's
``--insecure`` does. Credentials never appear in an error message.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

from ..errors import FailureKind, ScanFailed
from .credentials import Credentials
from .guard import RegistryNotAllowed

if TYPE_CHECKING:
    import requests

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
DEFAULT_TIMEOUT_SECONDS = 30.0
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
# One tags/list page is read into memory at most this far (decoded): 10,000 tags of 128 characters
# (the spec's longest) are 1.3 MB. A longer page is an error, not a cap: its tags cannot be read in part.
TAGS_PAGE_MAX_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec: registries may refuse larger manifests
TagCap = Literal["pages", "tags", "time"]


class RegistryApiError(ScanFailed):
    """A registry API call failed; ``reason`` and ``kind`` as for trivy's failures."""


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry served it."""

    media_type: str
    digest: str | None
    document: dict[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or "manifests" in self.document

    @property
    def compressed_size(self) -> int:
        """The sum of the layers' (compressed) sizes and the config's; 0 for an index."""
        layers = self.document.get("layers") or []
        config = self.document.get("config") or {}
        return sum(int(item.get("size", 0)) for item in [*layers, config])

    def platforms(self) -> list[tuple[str, str]]:
        """An index's ``(os/arch[/variant], digest)`` entries, in the index's order."""
        found = []
        for entry in self.document.get("manifests") or []:
            platform = entry.get("platform") or {}
            parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
            found.append(("/".join(p for p in parts if p), str(entry.get("digest"))))
        return found


@dataclass(frozen=True)
class TagLimits:
    """Where a tag listing stops: after ``max_pages`` pages, ``max_tags`` tags, or at
    ``deadline`` (a ``time.monotonic()`` value), whichever comes first; ``None``: no limit."""

    max_pages: int | None = None
    max_tags: int | None = None
    deadline: float | None = None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class TagListing:
    """One repository's tags, read page by page while they are iterated (``Link: rel="next"``),
    one page in memory at a time. It stops at the first limit it meets and ``capped`` names it;
    a page past a limit is never requested, so ``max_pages`` pages mean ``max_pages`` requests."""

    def __init__(self, api: RegistryApi, repository: str, limits: TagLimits, page_size: int | None) -> None:
        self._api = api
        self.repository = repository
        self.limits = limits
        self._first = f"/v2/{repository}/tags/list" + (f"?n={page_size}" if page_size else "")
        self.pages = 0
        self.tags = 0
        self.capped: TagCap | None = None

    def __iter__(self) -> Iterator[str]:
        limits, path = self.limits, self._first
        while path is not None:
            if limits.max_pages is not None and self.pages >= limits.max_pages:
                self.capped = "pages"
                return
            if limits.max_tags is not None and self.tags >= limits.max_tags:
                self.capped = "tags"
                return
            page = self._api.tags_page(path, self.repository, limits)
            if page is None:
                self.capped = "time"
                return
            self.pages += 1
            names, link = page
            for name in names:
                if limits.max_tags is not None and self.tags >= limits.max_tags:
                    self.capped = "tags"
                    return
                self.tags += 1
                yield name
            path = urljoin(path, link) if link else None


class RegistryApi:
    """One registry host's API, with the credentials configured for it."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        plain_http: bool = False,
    ) -> None:
        """``plain_http``: speak HTTP only (a loopback registry, as trivy does), skipping the HTTPS try."""
        from .guarded_http import GuardedSession  # requests, on first use: not every process talks to a registry

        self.registry = registry
        self._credentials = credentials
        self._insecure = insecure
        self._timeout = timeout
        self._session = GuardedSession()  # every connection, redirect and token realm passes the guard
        self._session.verify = not insecure
        self._scheme: str | None = "http" if plain_http else None
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest(self, repository: str, reference: str, accept: tuple[str, ...] = MANIFEST_TYPES) -> Manifest:
        """``GET /v2/<repository>/manifests/<tag or digest>``, its body read up to ``MAX_MANIFEST_BYTES``."""
        response = self._get(f"/v2/{repository}/manifests/{reference}", repository, {"Accept": ", ".join(accept)},
                             stream=True)  # fmt: skip
        content = self._manifest_body(response, f"{repository}:{reference}")
        try:
            document = json.loads(content)
        except ValueError:
            raise RegistryApiError(
                f"{self.registry}/{repository}:{reference}: the manifest is not JSON",
                kind=FailureKind.PERMANENT,
                reason="invalid-image",
            ) from None
        media_type = response.headers.get("Content-Type", "").split(";")[0] or document.get("mediaType", "")
        return Manifest(media_type, response.headers.get("Docker-Content-Digest"), document)

    def digest(self, repository: str, reference: str, accept: tuple[str, ...] = MANIFEST_TYPES) -> str:
        """The manifest digest of a tag: ``HEAD /v2/<repository>/manifests/<tag>`` and its
        ``Docker-Content-Digest`` (a GET and the body's SHA-256 when a registry omits it)."""
        headers = {"Accept": ", ".join(accept)}
        response = self._get(f"/v2/{repository}/manifests/{reference}", repository, headers, method="HEAD")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            response = self._get(f"/v2/{repository}/manifests/{reference}", repository, headers, stream=True)
            digest = "sha256:" + hashlib.sha256(self._manifest_body(response, f"{repository}:{reference}")).hexdigest()
        return digest

    def _manifest_body(self, response: requests.Response, what: str) -> bytes:
        """A manifest's bytes; one over ``MAX_MANIFEST_BYTES`` (the distribution spec's 4 MiB) is
        refused before it is read whole, so a hostile registry cannot fill the instance's memory."""
        deadline = TagLimits(deadline=time.monotonic() + self._timeout) if self._timeout else TagLimits()
        try:
            body = _read_bounded(response, MAX_MANIFEST_BYTES, deadline, self.registry)
        finally:
            response.close()
        if body is None or len(body) > MAX_MANIFEST_BYTES:
            raise RegistryApiError(
                f"{self.registry}/{what}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes or was not sent in "
                "time", kind=FailureKind.PERMANENT, reason="invalid-image",
            )
        return body

    def tags(self, repository: str, page_size: int | None = None, limits: TagLimits | None = None) -> TagListing:
        """The tags, in the registry's order, following ``Link: <...>; rel="next"`` up to ``limits``."""
        return TagListing(self, repository, limits or TagLimits(), page_size)

    def tags_page(self, path: str, repository: str, limits: TagLimits) -> tuple[list[str], str | None] | None:
        """One ``tags/list`` page: its tags and the ``next`` link; ``None`` when ``limits.deadline``
        passes first (the read is given up). The body is streamed and bounded (``TAGS_PAGE_MAX_BYTES``)."""
        remaining = limits.remaining()
        if remaining is not None and remaining <= 0:
            return None
        timeout = self._timeout if remaining is None else min(self._timeout, remaining)
        try:
            response = self._get(path, repository, {"Accept": "application/json"}, stream=True, timeout=timeout)
        except RegistryApiError:
            if _past(limits):
                return None  # the connection timed out because the deadline came
            raise
        with response:
            body = _read_bounded(response, TAGS_PAGE_MAX_BYTES, limits, self.registry)
            if body is None:
                return None
            if len(body) > TAGS_PAGE_MAX_BYTES:
                raise RegistryApiError(
                    f"{self.registry}/{repository}: a tags/list page is over {TAGS_PAGE_MAX_BYTES} bytes",
                    kind=FailureKind.PERMANENT, reason="invalid-response",
                )
            link = _NEXT_LINK.search(response.headers.get("Link", ""))
        try:
            names = json.loads(body).get("tags") or []
        except (ValueError, AttributeError):
            names = None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise RegistryApiError(
                f"{self.registry}/{repository}: the tags/list answer is not a JSON object with a list of tags",
                kind=FailureKind.PERMANENT, reason="invalid-response",
            )
        return names, link.group(1) if link else None

    def _get(
        self, path: str, repository: str, headers: dict[str, str], method: str = "GET", *,
        stream: bool = False, timeout: float | None = None,
    ) -> requests.Response:
        scope = f"repository:{repository}:pull"
        response = self._send(path, headers, scope, method, stream=stream, timeout=timeout)
        if response.status_code == 401:
            response.close()
            self._authenticate(response, scope)
            response = self._send(path, headers, scope, method, stream=stream, timeout=timeout)
        if response.ok:
            return response
        response.close()
        raise _status_error(self.registry, path, response.status_code)

    def _send(
        self, path: str, headers: dict[str, str], scope: str, method: str = "GET", *,
        stream: bool = False, timeout: float | None = None,
    ) -> requests.Response:
        import requests

        headers = dict(headers)
        if (token := self._tokens.get(scope)) is not None:
            headers["Authorization"] = token
        for scheme in self._schemes():
            try:
                response = self._session.request(
                    method, f"{scheme}://{self.registry}{path}", headers=headers,
                    timeout=self._timeout if timeout is None else timeout, stream=stream,
                )
            except requests.exceptions.SSLError:
                if self._insecure and scheme == "https":
                    continue  # an insecure registry may speak plain HTTP
                raise _unreachable(self.registry, "its TLS certificate is not trusted (mark it insecure?)") from None
            except requests.exceptions.RequestException as error:
                if self._insecure and scheme == "https" and self._scheme is None:
                    continue
                raise _unreachable(self.registry, type(error).__name__) from None
            self._scheme = scheme
            return response
        raise _unreachable(self.registry, "no HTTPS or HTTP answer")

    def _schemes(self) -> tuple[str, ...]:
        if self._scheme is not None:
            return (self._scheme,)
        return ("https", "http") if self._insecure else ("https",)

    def _authenticate(self, challenge: requests.Response, scope: str) -> None:
        header = challenge.headers.get("WWW-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        auth = (self._credentials.username, self._credentials.password) if self._credentials else None
        if scheme == "basic":
            if auth is None:
                raise _status_error(self.registry, "", 401)
            import requests

            request = requests.Request("GET", "http://x", auth=auth).prepare()
            self._tokens[scope] = str(request.headers["Authorization"])
            return
        if scheme != "bearer":
            raise _status_error(self.registry, "", 401)
        params = dict(_CHALLENGE_PARAM.findall(header))
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            response = self._session.get(params.get("realm", ""), params=query, auth=auth, timeout=self._timeout)
        except RegistryNotAllowed:
            raise
        except Exception as error:  # noqa: BLE001 - any failure to reach the token service
            raise _unreachable(self.registry, f"token service: {type(error).__name__}") from None
        if not response.ok:
            raise _status_error(self.registry, "token", response.status_code)
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise _status_error(self.registry, "token", 401)
        self._tokens[scope] = f"Bearer {token}"


def _read_bounded(response: requests.Response, limit: int, limits: TagLimits, registry: str) -> bytes | None:
    """The decoded body, read until ``limit`` + 1 bytes at most; ``None`` past the deadline.
    ``read1`` returns what one receive brings, so a registry that drips its answer is stopped too."""
    from urllib3.exceptions import HTTPError

    body = bytearray()
    try:
        while len(body) <= limit:
            if _past(limits):
                return None
            chunk = response.raw.read1(_READ_CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
    except (HTTPError, OSError) as error:
        if _past(limits):
            return None  # the read timed out because the deadline came
        raise _unreachable(registry, type(error).__name__) from None
    return bytes(body)


def _past(limits: TagLimits) -> bool:
    remaining = limits.remaining()
    return remaining is not None and remaining <= 0


def _status_error(registry: str, path: str, status: int) -> RegistryApiError:
    where = f"{registry}{path}" if path.startswith("/") else f"{registry} ({path or 'auth'})"
    if status in (401, 403):
        return RegistryApiError(
            f"{where}: {status} unauthorized: check the registry's credentials in TRIVY_CONFIG_PATH",
            kind=FailureKind.PERMANENT,
            reason="unauthorized",
        )
    if status == 404:
        return RegistryApiError(f"{where}: 404 not found", kind=FailureKind.PERMANENT, reason="not-found")
    if status == 429:
        return RegistryApiError(f"{where}: 429 rate-limited", kind=FailureKind.TRANSIENT, reason="rate-limited")
    return RegistryApiError(f"{where}: HTTP {status}", kind=FailureKind.TRANSIENT, reason="registry-unreachable")


def _unreachable(registry: str, detail: str) -> RegistryApiError:
    return RegistryApiError(
        f"registry {registry} could not be reached: {detail}", kind=FailureKind.TRANSIENT, reason="registry-unreachable"
    )
