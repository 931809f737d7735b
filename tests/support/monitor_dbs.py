"""Vulnerability DBs that learn between scans, for the monitor's tests.

The sample image (``images.SAMPLE_PACKAGES``) against:

``PASSING``  the sample advisories without the critical one: 2 high → ``passed``.
``FIRST``    the sample advisories: 1 critical, 2 high → ``failed``.
``LEARNT``   a later DB: two new advisories (CVE-2099-0101 critical in curl,
             CVE-2099-0100 high in zlib) and one withdrawn (CVE-2099-0003,
             high in musl): 2 critical, 2 high → ``failed``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .images import SAMPLE_ADVISORIES
from .trivy_db import Advisory, build_trivy_db

NEW_HIGH = Advisory("CVE-2099-0100", "zlib", "1.2.13-r3", "HIGH", "zlib: inflate window overflow")
NEW_CRITICAL = Advisory("CVE-2099-0101", "curl", "8.5.0-r1", "CRITICAL", "curl: SOCKS5 heap overflow")
WITHDRAWN = "CVE-2099-0003"

PASSING = tuple(a for a in SAMPLE_ADVISORIES if a.severity != "CRITICAL")
FIRST = SAMPLE_ADVISORIES
LEARNT = tuple(a for a in SAMPLE_ADVISORIES if a.vulnerability_id != WITHDRAWN) + (NEW_HIGH, NEW_CRITICAL)

DB_DATES = {
    "passing": datetime(2026, 11, 1, tzinfo=timezone.utc),
    "first": datetime(2026, 11, 1, tzinfo=timezone.utc),
    "learnt": datetime(2026, 11, 3, tzinfo=timezone.utc),
}


def build_caches(root: Path) -> dict[str, Path]:
    """One trivy cache dir per DB (``TRIVY_CACHE_DIR``), keyed like ``DB_DATES``."""
    caches = {}
    for name, advisories in (("passing", PASSING), ("first", FIRST), ("learnt", LEARNT)):
        cache = root / f"cache-{name}"
        build_trivy_db(
            cache, advisories, updated_at=DB_DATES[name], next_update=datetime(2099, 1, 1, tzinfo=timezone.utc)
        )
        caches[name] = cache
    return caches
