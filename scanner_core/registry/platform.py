"""Image platforms (``os/arch[/variant]``, e.g. ``linux/arm64``) and picking
one out of an image index, as container runtimes and trivy's ``--platform`` do."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RequestError

DEFAULT_PLATFORM = "linux/amd64"  # what trivy (go-containerregistry) picks from an index without --platform
_PLATFORM = re.compile(r"^([a-z0-9]+)/([a-z0-9_]+)(?:/([a-z0-9]+))?$")
# Index entries that are not images (BuildKit attestations) carry "unknown/unknown".
_NOT_A_PLATFORM = "unknown/unknown"


class InvalidPlatform(RequestError, ValueError):
    """A platform is not ``os/arch[/variant]``."""

    reason = "invalid-platform"

    def __init__(self, message: str, field: str = "platform") -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def matches(self, offered: str) -> bool:
        """An index entry ``offered`` serves this platform; without a variant, any variant does."""
        try:
            other = parse_platform(offered)
        except InvalidPlatform:
            return False
        if (other.os, other.architecture) != (self.os, self.architecture):
            return False
        return self.variant is None or self.variant == other.variant


def parse_platform(text: str, field: str = "platform") -> Platform:
    """``linux/arm64``, ``linux/arm/v7`` → ``Platform``; anything else raises ``InvalidPlatform``."""
    match = _PLATFORM.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidPlatform(
            f"{text!r} is not a platform: expected os/arch[/variant] in lower case, e.g. linux/amd64, linux/arm64, "
            "linux/arm/v7",
            field,
        )
    return Platform(match.group(1), match.group(2), match.group(3))


def pick_platform(wanted: Platform, offered: Sequence[tuple[str, str]]) -> str | None:
    """The digest of the first index entry serving ``wanted``, or ``None``."""
    return next((digest for name, digest in offered if wanted.matches(name)), None)


MAX_INDEX_ENTRIES = 32
_MANIFEST_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def pullable_entries(offered: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Every entry of an index a runtime may pull, as ``{manifest digest: platform}`` (attestation
    entries left out; an entry without a platform, or a nested index, has ``""``): what must all be
    approved for the index to be (issue 23). ``ValueError`` for an index a gate cannot judge:
    a digest that is not ``sha256:<64 hex>``, a platform name over 64 characters, more than
    ``MAX_INDEX_ENTRIES`` entries."""
    entries: dict[str, str] = {}
    for name, digest in offered:
        if name == _NOT_A_PLATFORM:
            continue
        if not _MANIFEST_DIGEST.fullmatch(digest) or len(name) > 64:
            raise ValueError(f"an index entry is not a manifest digest with a platform name: {digest[:80]!r}")
        entries.setdefault(digest, name)
    if len(entries) > MAX_INDEX_ENTRIES:
        raise ValueError(f"the index has {len(entries)} entries, more than {MAX_INDEX_ENTRIES}")
    return entries


def offered_platforms(offered: Sequence[tuple[str, str]]) -> list[str]:
    """The platforms an index offers, for messages (attestation entries left out)."""
    return [name for name, _ in offered if name and name != _NOT_A_PLATFORM]
