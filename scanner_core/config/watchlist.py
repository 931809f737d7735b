"""The ``watch:`` list of the YAML file: repositories whose new tags are scanned
without anyone asking (see ``watch.py``)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import RequestError
from ..registry import ImageReference, current_guard, parse_image_reference

# os/arch[/variant], as trivy's --platform and OCI image indexes spell it.
PLATFORM_PATTERN = r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$"


class WatchEntry(BaseModel):
    """One watched repository.

    ``repository``: a repository reference without tag or digest
    (``myacr.azurecr.io/team/app``; ``alpine`` is ``docker.io/library/alpine``).
    ``tags``: a regular expression (Python syntax, searched: anchor it with
    ``^...$``); every tag when absent. ``platform``: for a tag that points to a
    multi-platform index, the platform whose manifest is scanned; trivy's
    default (the scanner's own) when absent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: str = Field(min_length=1, description="registry host and repository, without tag or digest")
    tags: str | None = Field(None, description="regular expression the tags must match, e.g. ^v?\\d+\\.\\d+\\.\\d+$")
    platform: str | None = Field(None, pattern=PLATFORM_PATTERN, description="os/arch[/variant], e.g. linux/amd64")

    @field_validator("repository")
    @classmethod
    def _check_repository(cls, value: str) -> str:
        reference = parse_image_reference(value, "repository")  # InvalidImageReference is a ValueError
        if reference.tag or reference.digest:
            raise ValueError(f"{value!r} must name a repository without tag or digest; tags are chosen by 'tags'")
        try:  # ALLOWED_REGISTRIES at start-up; addresses are checked when the timer connects
            current_guard().check_image(reference, "repository", resolve_name=False)
        except RequestError as error:
            raise ValueError(error.detail) from None
        return value

    @field_validator("tags")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"is not a valid regular expression: {error}") from None
        return value

    @property
    def reference(self) -> ImageReference:
        return parse_image_reference(self.repository, "repository")

    @property
    def canonical(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/alpine``."""
        reference = self.reference
        return f"{reference.registry}/{reference.repository}"

    def matches(self, tag: str) -> bool:
        return self.tags is None or re.search(self.tags, tag) is not None
