"""The seed's auto-rejection: ``decision`` in meta.

With ``TRIVY_AUTO_REJECT_CRITICAL=true`` a succeeded audit whose status is
``failed`` is ``rejected``; every other succeeded audit is ``pending``: the
approval stays with people. An audit that did not succeed has no decision
(nothing was judged).
"""

from __future__ import annotations

from typing import Literal

Decision = Literal["rejected", "pending"]


def decide(scan_status: str | None, auto_reject_critical: bool) -> Decision | None:
    if scan_status is None:
        return None
    return "rejected" if auto_reject_critical and scan_status == "failed" else "pending"
