"""What the registry says about an image before it is pulled: the digest the
reference names, the manifest of the platform to scan, and its compressed size.

An index (multi-platform image) is resolved to the requested platform, or to
``linux/amd64`` as trivy does without ``--platform``; when the index offers no
such platform the scan fails at once (``platform-not-found``, permanent) with
the platforms it does offer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import FailureKind, ScanFailed
from .api import RegistryApi, RegistryApiError
from .credentials import Credentials
from .platform import (
    DEFAULT_PLATFORM,
    Platform,
    offered_platforms,
    parse_platform,
    pick_platform,
    pullable_entries,
)
from .reference import DOCKER_HUB, ImageReference

_DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageFacts:
    """``digest``: what the reference names (the index, for a multi-platform image);
    ``platform_digest``: the manifest that is scanned; ``compressed_size``: its
    layers and config, in bytes; ``tag_digest``: for a ``repo:tag@digest`` reference,
    the digest the registry says the tag points at now (``None``: it could not say)."""

    digest: str | None
    platform_digest: str | None
    compressed_size: int | None
    is_index: bool = False
    platforms: tuple[str, ...] = ()
    tag_digest: str | None = None
    manifests: tuple[tuple[str, str], ...] = ()  # an index's (manifest digest, platform): pullable_entries

    def confirms_tag(self, image: ImageReference) -> bool:
        """Whether the registry says ``image``'s tag points at its digest (issue 23: a verdict
        by tag must not be pointed at another digest by a request naming both)."""
        return image.tag is None or image.digest is None or self.tag_digest == image.digest


def inspect_image(
    image: ImageReference,
    platform: Platform | None,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    timeout: float = 30.0,
) -> ImageFacts:
    """Reads the manifest(s); raises ``RegistryApiError`` when the registry does not
    answer as hoped, ``ScanFailed`` (``platform-not-found``) when the index lacks the platform."""
    host = _DOCKER_HUB_API if image.registry == DOCKER_HUB else image.registry
    reference = image.digest or image.tag or "latest"
    # Like trivy (go-containerregistry), a loopback registry is spoken to over plain HTTP.
    loopback = _is_loopback(host)
    with RegistryApi(host, credentials=credentials, insecure=insecure or loopback, timeout=timeout,
                     plain_http=loopback and not insecure) as api:
        top = api.manifest(image.repository, reference)
        digest = top.digest or image.digest
        tag_digest = _tag_digest(api, image)
        if not top.is_index:
            return ImageFacts(digest, digest, top.compressed_size, tag_digest=tag_digest)
        offered = top.platforms()
        wanted = platform or parse_platform(DEFAULT_PLATFORM)
        chosen = pick_platform(wanted, offered)
        names = tuple(offered_platforms(offered))
        if chosen is None:
            raise ScanFailed(
                f"{image.canonical} is an image index without a manifest for platform {wanted}; it offers: "
                f"{', '.join(names) or 'no platforms'} (set 'platform' in the request, or TRIVY_PLATFORM)",
                kind=FailureKind.PERMANENT,
                reason="platform-not-found",
            )
        child = api.manifest(image.repository, chosen)
        try:
            manifests = tuple(pullable_entries(offered).items())
        except ValueError as error:
            raise ScanFailed(f"{image.canonical}: {error}", kind=FailureKind.PERMANENT, reason="invalid-image") from None
        return ImageFacts(digest, chosen, child.compressed_size, True, names, tag_digest, manifests)


def _tag_digest(api: RegistryApi, image: ImageReference) -> str | None:
    """What the tag of a ``repo:tag@digest`` reference points at (one HEAD); ``None`` for a
    reference without both, or when the registry does not say (a missing tag, an error)."""
    if image.tag is None or image.digest is None:
        return None
    try:
        return api.digest(image.repository, image.tag)
    except RegistryApiError:
        return None


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
