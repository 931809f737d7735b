"""A tag's digest, from the registry, trusted for a short TTL (an explicit per-process cache).

An admission answer is about what the node will pull: a reference by digest needs no
registry call; one by tag is resolved (``HEAD`` of the manifest, through the egress guard
``ALLOWED_REGISTRIES`` and with the registry's configured credentials) once per
``ADMISSION_TAG_TTL_SECONDS`` per process. Concurrent reviews of the same tag wait for one
request (single flight), so a rollout of 50 pods asks the registry once.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import ScannerConfig
from ..registry import ImageReference, RegistryApi, current_guard, find_credentials, resolve_credentials
from .ttl_cache import TtlCache, process_cache

Resolve = Callable[[ImageReference], str]
REQUEST_TIMEOUT_SECONDS = 2.0  # inside Gatekeeper's 3 s and the webhook's 10 s


class TagResolver:
    """``digest(reference, resolve)``: the cached digest of ``registry/repository:tag``, else
    ``resolve``'s (which carries the configuration of the moment: guard, credentials)."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._cache: TtlCache[str] = process_cache("tags", ttl_seconds)

    def digest(self, reference: ImageReference, resolve: Resolve) -> str:
        if reference.digest:
            return reference.digest
        key = f"{reference.registry}/{reference.repository}:{reference.tag or 'latest'}"
        return self._cache.get(key, lambda: resolve(reference))


def registry_digest(config: ScannerConfig) -> Resolve:
    """Resolves a tag with the registry API, the guard and the credentials configured for its host."""

    def resolve(reference: ImageReference) -> str:
        current_guard().check_image(reference, "image")  # RegistryNotAllowed: a 400 naming the image
        entry = find_credentials(reference, config.file.registries)
        with RegistryApi(reference.registry, credentials=resolve_credentials(entry),
                         insecure=bool(entry and entry.insecure), timeout=REQUEST_TIMEOUT_SECONDS) as api:
            return api.digest(reference.repository, reference.tag or "latest")

    return resolve


def tag_resolver(ttl_seconds: float) -> TagResolver:
    """The process's tags' digests (an explicit per-process cache) for a TTL setting."""
    return TagResolver(ttl_seconds)
