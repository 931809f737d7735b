"""Fleet queries (issue 24, item 3): which current images have a vulnerability, and which
contain a package, from two Azure tables kept up to date by each audit's follow-up.

``rows.py`` (the tables' entities and an image's key), ``inventory.py`` (packages of a
stored CycloneDX inventory), ``versions.py`` (version ranges), ``writer.py`` (each audit's
delta, ``forget_image``, ``rebuild_queries``), ``reader.py`` (the routes' pages).

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "FoundPackage": ".rows",
    "IMAGE_TABLE": ".rows",
    "PACKAGE_TABLE": ".rows",
    "VULNERABILITY_TABLE": ".rows",
    "ImageSubject": ".rows",
    "subject_of": ".rows",
    "InstalledPackage": ".inventory",
    "packages_of_inventory": ".inventory",
    "VersionRange": ".versions",
    "parse_version_range": ".versions",
    "QueryTables": ".writer",
    "RecordOutcome": ".writer",
    "fleet_tables_connection": ".writer",
    "forget_image": ".writer",
    "rebuild_queries": ".writer",
    "stored_findings": ".writer",
    "stored_packages": ".writer",
    "QueryPage": ".reader",
    "images_with_package": ".reader",
    "images_with_vulnerability": ".reader",
    "normalise_vulnerability_id": ".reader",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
