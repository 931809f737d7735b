"""The policy file's ``approvers:`` (issue 25): which role or group claims may decide on which
repositories, so that team A's reviewers cannot approve team B's images.

Entries in order, first match wins: an entry matches an image when its ``repository`` globs
match the repository path (``team-a/*``; as the rules' ``repository`` condition) and its
``registry`` globs, if any, the registry. The reviewer then needs one of its ``roles`` (role or
group claims from App Service authentication). An image no entry matches is open to every
reviewer ``APPROVER_ROLES`` allows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..registry import parse_image_reference


class ApproverEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    repository: list[str] = Field(min_length=1)
    registry: list[str] = Field(default_factory=list)
    roles: list[str] = Field(min_length=1)

    @field_validator("repository", "registry", "roles", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def covers(self, registry: str, path: str) -> bool:
        return any(fnmatchcase(path, g) for g in self.repository) and (
            not self.registry or any(fnmatchcase(registry, g) for g in self.registry))


def owner_of(entries: Sequence[ApproverEntry], repository: str) -> ApproverEntry | None:
    """The entry that owns ``repository`` (``registry/path``), or ``None``."""
    if not entries:
        return None
    reference = parse_image_reference(repository)
    return next((e for e in entries if e.covers(reference.registry, reference.repository)), None)


def owner_refusal(entries: Sequence[ApproverEntry], repository: str, name: str, roles: Collection[str],
                  authenticated: bool) -> str | None:
    """Why ``name`` may not decide on ``repository`` (a sentence naming the entry), or ``None``."""
    entry = owner_of(entries, repository)
    if entry is None or (authenticated and set(roles) & set(entry.roles)):
        return None
    who = name if authenticated else f"{name} (unauthenticated: no role or group claims)"
    return (f"{who} may not decide on {repository}: the policy's approvers entry {entry.id!r} "
            f"({', '.join(entry.repository)}) allows the roles or groups {', '.join(entry.roles)}")
