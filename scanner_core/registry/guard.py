"""Which registries this deployment contacts, and which addresses it never does.

``ALLOWED_REGISTRIES`` (comma-separated) names the registries a request may
name: ``registry.example.com`` (any port), ``registry.example.com:5000`` (that
port only) or ``*.azurecr.io`` (any subdomain, any port); ``*`` is any registry whose
addresses are public, which is also what an unset allowlist allows (so
``*,registry.internal`` adds one private registry to the default). A refused registry fails at once, before
any connection, as the permanent ``registry-not-allowed`` (``RegistryNotAllowed``,
a ``RequestError`` naming the request's field).

Whatever the allowlist, a connection is refused to link-local and metadata
addresses (``169.254.0.0/16``, ``fe80::/10``, ``fd00:ec2::254``) and to the
address and port of the managed-identity endpoint (``IDENTITY_ENDPOINT``,
``MSI_ENDPOINT``). Loopback, private and other non-public addresses are
contacted only for a host that an ``ALLOWED_REGISTRIES`` entry matches (or that
the operator configured as a DB repository mirror). A name is resolved and
every address it resolves to is checked; the registry API client then connects
to the address it checked (``GuardedSession``), so redirects and Bearer token
realms get the same check at connect time. trivy resolves names itself: the
check just before it starts is followed by the egress proxy (``egress.py``), through which
trivy reaches every registry, redirects and token realms included (docs/operations.md).

The policy follows the process environment (the same variables ``Settings``
validates at start-up), so every edge that contacts a registry, including
those that hold no ``Settings``, applies the same one.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from contextlib import suppress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import FailureKind, RequestError

if TYPE_CHECKING:
    from .reference import ImageReference

REASON = "registry-not-allowed"
SETTING = "ALLOWED_REGISTRIES"
ALWAYS_REFUSED = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"))
_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "IMDS_ENDPOINT")
_MIRROR_VARIABLES = ("TRIVY_DB_REPOSITORY", "TRIVY_JAVA_DB_REPOSITORY")
_DOCKER_HUB_HOSTS = {"docker.io": "registry-1.docker.io"}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host -> addresses; the test suite replaces it to make a name resolve where it wants (never /etc/hosts).
Resolver = Callable[[str], list[str]]


class RegistryNotAllowed(RequestError):
    """A registry (or an address it leads to) this deployment does not contact; permanent."""

    reason = REASON
    kind = FailureKind.PERMANENT


@dataclass(frozen=True)
class AllowEntry:
    """One ``ALLOWED_REGISTRIES`` entry: a host (or ``*.`` suffix) and an optional port."""

    host: str
    port: int | None = None

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")

    @property
    def any_public(self) -> bool:
        """``*``: any registry, as when unset; it lists no non-public address."""
        return self.host == "*"

    def matches(self, host: str, port: int | None) -> bool:
        if self.any_public:
            return True
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host

    def __str__(self) -> str:
        return self.host + (f":{self.port}" if self.port is not None else "")


def split_host_port(address: str) -> tuple[str, int | None]:
    """``Host:5000`` → ``("host", 5000)``; ``[::1]:5000`` → ``("::1", 5000)``; no port → ``None``."""
    text = address.strip().lower()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise ValueError(f"{address!r} has an invalid port {port!r}")
        return host, int(port)
    return text, None  # a bare IPv6 address, or a name


def parse_allowlist(value: str | Iterable[str] | None) -> tuple[AllowEntry, ...] | None:
    """``None`` when unset (any public registry); raises ``ValueError`` naming the bad entry."""
    if value is None:
        return None
    items = [i.strip() for i in value.split(",")] if isinstance(value, str) else [str(i).strip() for i in value]
    entries = []
    for item in filter(None, items):
        try:
            host, port = split_host_port(item)
        except ValueError:
            host, port = "", None
        if host == "*" and port is None:
            entries.append(AllowEntry("*"))
            continue
        name = host[2:] if host.startswith("*.") else host
        if not name or "*" in name or "/" in name or (port is not None and not 0 < port < 65536):
            raise ValueError(
                f"entry {item!r} must be a registry host, host:port, *.domain or * (any public registry), "
                "e.g. myacr.azurecr.io, registry.example.com:5000, *.azurecr.io"
            )
        entries.append(AllowEntry(host, port))
    return tuple(entries) or None


def _system_resolver(host: str) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


_resolver_lock = threading.Lock()
_resolver: Resolver = _system_resolver


def use_resolver(resolver: Resolver | None) -> None:
    """Replaces how names are resolved (``None``: the system's). For tests: a name can
    resolve to a refused address without touching /etc/hosts."""
    global _resolver
    with _resolver_lock:
        _resolver = resolver or _system_resolver


def resolve(host: str) -> list[Address]:
    """Every address of ``host`` (an IP literal is its own); ``OSError`` when it does not resolve."""
    try:
        return [_address(host)]
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: loopback, whatever DNS says
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    return [_address(a) for a in _resolver(host)]


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class RegistryGuard:
    """The allowlist (``None``: any public registry), the operator's own hosts (DB
    mirrors: their addresses may be private, they are not requesters' registries),
    and the identity endpoint's ``(address, port)`` pairs, never contacted."""

    allowed: tuple[AllowEntry, ...] | None = None
    operator_hosts: tuple[AllowEntry, ...] = ()
    identity: frozenset[tuple[Address, int]] = field(default_factory=frozenset)

    def check_registry(self, registry: str, field_name: str = "image", *, resolve_name: bool = True) -> None:
        """Allowlist, then (``resolve_name``) every address the registry host resolves to.
        A name that does not resolve passes: the registry client or trivy reports it."""
        host, port = split_host_port(registry)
        if self.allowed is not None and not any(e.matches(host, port) for e in self.allowed):
            raise RegistryNotAllowed(
                field_name,
                f"registry {registry!r} is not allowed: {SETTING} lists {', '.join(map(str, self.allowed))}",
            )
        if resolve_name:
            self.checked_addresses(_DOCKER_HUB_HOSTS.get(host, host), port, field_name)

    def check_operator_registry(self, repository: str, field_name: str) -> None:
        """An operator's own repository (a DB mirror): not subject to the allowlist,
        but never at a link-local, metadata or identity-endpoint address."""
        from .reference import parse_image_reference

        host, port = split_host_port(parse_image_reference(repository, field_name).registry)
        self.checked_addresses(_DOCKER_HUB_HOSTS.get(host, host), port, field_name)

    def check_image(self, image: ImageReference, field_name: str = "image", *, resolve_name: bool = True) -> None:
        self.check_registry(image.registry, field_name, resolve_name=resolve_name)

    def checked_addresses(self, host: str, port: int | None, field_name: str = "image") -> list[Address]:
        """The addresses to connect to for ``host:port``, each checked; raises ``RegistryNotAllowed``."""
        host = host.lower().rstrip(".")
        try:
            addresses = resolve(host)
        except OSError:
            return []
        for address in addresses:
            self._check_address(host, port, address, field_name)
        return addresses

    def _check_address(self, host: str, port: int | None, address: Address, field_name: str) -> None:
        if any(address in net for net in ALWAYS_REFUSED if net.version == address.version):
            why = "a link-local or cloud metadata address, never contacted"
        elif any((address, p) in self.identity for p in ((port,) if port is not None else (443, 80))):
            why = "the managed-identity endpoint, never contacted"
        elif not address.is_global and not self._listed(host, port):
            why = f"not a public address; a registry there must be listed in {SETTING}"
        else:
            return
        shown = host if host == str(address) else f"{host} ({address})"
        raise RegistryNotAllowed(field_name, f"{shown}{f':{port}' if port else ''} is {why}")

    def _listed(self, host: str, port: int | None) -> bool:
        entries = (*(self.allowed or ()), *self.operator_hosts)
        return any(e.matches(host, port) for e in entries if not e.any_public)


def guard_from(environ: Mapping[str, str]) -> RegistryGuard:
    """The guard for an environment (``ALLOWED_REGISTRIES``, the identity endpoint, the DB mirrors)."""
    return _guard(tuple(environ.get(n, "") for n in (SETTING, *_IDENTITY_VARIABLES, *_MIRROR_VARIABLES)))


def current_guard() -> RegistryGuard:
    """The guard for this process's environment (cached per value of its variables)."""
    return guard_from(os.environ)


@lru_cache(maxsize=8)
def _guard(values: tuple[str, ...]) -> RegistryGuard:
    identities = len(_IDENTITY_VARIABLES)
    allowed_text, identity_urls, mirrors = values[0], values[1:1 + identities], values[1 + identities:]
    try:
        allowed = parse_allowlist(allowed_text or None)
    except ValueError:
        allowed = ()  # Settings refuses to start with it; an edge that meets it anyway allows nothing
    operators = []
    for value in mirrors:
        for repository in filter(None, (r.strip() for r in value.split(","))):
            first = repository.split("/", 1)[0]
            if "." in first or ":" in first or first == "localhost":
                with suppress(OSError, ValueError):
                    operators.append(AllowEntry(*split_host_port(first)))
    identity: set[tuple[Address, int]] = set()
    for url in filter(None, identity_urls):
        parts = urlsplit(url)
        if parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            with suppress(OSError, ValueError):
                identity.update((address, port) for address in resolve(parts.hostname))
    return RegistryGuard(allowed, tuple(operators), frozenset(identity))


def allowed_reference(text: str, field_name: str = "image") -> ImageReference:
    """``parse_image_reference`` and the guard's check of its registry, both naming ``field_name``."""
    from .reference import parse_image_reference

    image = parse_image_reference(text, field_name)
    current_guard().check_image(image, field_name)
    return image
