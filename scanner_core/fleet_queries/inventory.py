"""The packages of a stored inventory: the CycloneDX SBOM an image scan keeps beside its
report (``sbom.cdx.json``, issue 18), as the package query indexes them.

Every component with a package URL is a package: its type is the purl's (``apk``, ``deb``,
``maven``, ``npm``, ``pypi``, ``golang``...), its name the component's ``name`` (for Maven
the artifact id, the group apart), its version the component's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..models import BoundedName


class InstalledPackage(BaseModel):
    """One package of an image's inventory."""

    model_config = ConfigDict(frozen=True)

    type: BoundedName
    name: BoundedName
    version: BoundedName | None = None
    group: BoundedName | None = None


def packages_of_inventory(data: bytes) -> list[InstalledPackage]:
    """The distinct packages of a CycloneDX JSON document (nested components included).
    Raises ``ValueError`` when it is not one."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise ValueError("not a CycloneDX JSON document")
    found: dict[tuple[str, str, str | None, str | None], InstalledPackage] = {}
    for component in _components(document):
        purl = component.get("purl")
        name = component.get("name")
        if not isinstance(purl, str) or not purl.startswith("pkg:") or not isinstance(name, str) or not name:
            continue
        kind = purl[4:].split("/", 1)[0].lower()
        version = component.get("version") if isinstance(component.get("version"), str) else None
        group = component.get("group") if isinstance(component.get("group"), str) and component.get("group") else None
        package = InstalledPackage(type=kind, name=name, version=version, group=group)
        found.setdefault((package.type, package.name, package.version, package.group), package)
    return list(found.values())


def _components(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for component in node.get("components") or []:
        if isinstance(component, dict):
            yield component
            yield from _components(component)
