"""Image references in docker's grammar, and registry host names.

The grammar follows the distribution project's reference package
(``docker.io`` is implied for a name without a registry host, and
``library/`` for an official image), so that ``alpine:3.19`` finds the
credentials configured for ``docker.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidImageReference

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_HOST = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# What registries and trivy accept: sha256 or sha512, lowercase hex of the full length.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class ImageReference:
    """A parsed, validated image reference."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def canonical(self) -> str:
        """The fully qualified form, e.g. ``docker.io/library/alpine:3.19``."""
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def __str__(self) -> str:
        return self.canonical


def parse_image_reference(text: str, field: str = "image") -> ImageReference:
    """Parses ``[host[:port]/]path[:tag][@digest]``; raises ``InvalidImageReference``."""
    if not isinstance(text, str) or not text:
        raise InvalidImageReference("an image reference is required, e.g. registry.example.com/team/app:1.0", field)
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidImageReference(f"{text!r} contains white space", field)
    if text.startswith("-"):
        raise InvalidImageReference(f"{text!r} must not start with '-'", field)
    if len(text) > 512:
        raise InvalidImageReference("is longer than 512 characters", field)

    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidImageReference(
                f"{text!r} has an invalid digest {digest!r}; expected sha256:<64 lowercase hex digits> "
                "or sha512:<128>", field
            )

    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidImageReference(
                f"{text!r} has an invalid tag {tag!r}; a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                field,
            )

    registry, path = _split_registry(remainder)
    if not path:
        raise InvalidImageReference(f"{text!r} names no repository", field)
    components = path.split("/")
    for component in components:
        if not _COMPONENT.fullmatch(component):
            raise InvalidImageReference(
                f"{text!r} has an invalid repository name {path!r}: each path component must be lowercase "
                "letters and digits, separated by '.', '_', '__' or '-'",
                field,
            )
    if registry == DOCKER_HUB and len(components) == 1:
        path = f"library/{path}"
    if len(f"{registry}/{path}") > _MAX_NAME_LENGTH:
        raise InvalidImageReference(f"the repository name is longer than {_MAX_NAME_LENGTH} characters", field)
    return ImageReference(registry=registry, repository=path, tag=tag, digest=digest)


def _split_registry(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    looks_like_host = sep and ("." in first or ":" in first or first == "localhost" or first != first.lower())
    if not looks_like_host:
        return DOCKER_HUB, name
    if not _HOST.fullmatch(first):
        raise InvalidImageReference(f"{name!r} has an invalid registry host {first!r}")
    return normalise_registry_host(first), rest


def normalise_registry_host(address: str) -> str:
    """``https://Index.Docker.io/v1/`` → ``docker.io``; ``localhost:5000/`` → ``localhost:5000``."""
    host = address.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host

