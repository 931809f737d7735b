"""Who is deciding: App Service authentication ("Easy Auth"), or a name given
with a function key.

With authentication on, App Service removes any ``X-MS-CLIENT-PRINCIPAL*``
header a client sends and adds its own: ``X-MS-CLIENT-PRINCIPAL-NAME`` and
``X-MS-CLIENT-PRINCIPAL``, base64 of ``{"auth_typ", "name_typ", "role_typ",
"claims": [{"typ", "val"}]}``. The platform sets ``WEBSITE_AUTH_ENABLED=True``
then; without it the headers are not trusted (anyone with a function key could
write them) and the request is unauthenticated.

``APPROVER_ROLES`` (role or group claim values) limits who may decide: anyone
else, unauthenticated callers included, is refused (403). Without it, a caller
with only a function key names themselves in the body's ``reviewer`` field, and
the history marks that name ``authenticated: false``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ScannerError

PRINCIPAL_HEADER = "x-ms-client-principal"
PRINCIPAL_NAME_HEADER = "x-ms-client-principal-name"
ROLE_CLAIMS = ("roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
GROUP_CLAIMS = ("groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups")
NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
MAX_REVIEWER_CHARS = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReviewerRefused(ScannerError):
    """The caller may not decide (403), or did not say who they are (400)."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True)
class Reviewer:
    name: str
    authenticated: bool
    roles: frozenset[str] = field(default_factory=frozenset)


def easy_auth_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("WEBSITE_AUTH_ENABLED", "").lower() == "true"


def _principal(headers: Mapping[str, str]) -> Reviewer | None:
    encoded = headers.get(PRINCIPAL_HEADER)
    if not encoded:
        return None
    try:
        document = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ReviewerRefused(400, "X-MS-CLIENT-PRINCIPAL", "is not base64 of a JSON object") from None
    if not isinstance(document, dict) or not isinstance(document.get("claims", []), list):
        raise ReviewerRefused(400, "X-MS-CLIENT-PRINCIPAL", "must be a JSON object with a 'claims' list")
    claims = [(str(c.get("typ", "")), str(c.get("val", ""))) for c in document.get("claims", []) if isinstance(c, dict)]
    role_types = {*ROLE_CLAIMS, *GROUP_CLAIMS, str(document.get("role_typ") or "")} - {""}
    name_types = [str(document.get("name_typ") or ""), *NAME_CLAIMS]
    name = headers.get(PRINCIPAL_NAME_HEADER) or next(
        (val for typ in name_types for (t, val) in claims if t == typ and val), ""
    )
    if not name:
        raise ReviewerRefused(400, "X-MS-CLIENT-PRINCIPAL", "names nobody: no name claim and no X-MS-CLIENT-PRINCIPAL-NAME")
    return Reviewer(name[:MAX_REVIEWER_CHARS], True, frozenset(val for typ, val in claims if typ in role_types))


def requester_from(headers: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str | None:
    """Who asks for a scan (``POST /api/scans``): the App Service principal's name when
    authentication is on (issue 25: four eyes), else ``None``; ``ReviewerRefused`` (400) for a
    malformed principal header."""
    principal = _principal(headers) if easy_auth_enabled(environ) else None
    return principal.name if principal is not None else None


def reviewer_from(
    headers: Mapping[str, str], body_reviewer: object, approver_roles: Sequence[str],
    environ: Mapping[str, str] = os.environ,
) -> Reviewer:
    """The reviewer of one request (``headers`` with lower-case names), or ``ReviewerRefused``."""
    principal = _principal(headers) if easy_auth_enabled(environ) else None
    if principal is not None:
        if approver_roles and not principal.roles & set(approver_roles):
            raise ReviewerRefused(
                403, "reviewer",
                f"{principal.name} may not decide: APPROVER_ROLES allows the roles or groups "
                f"{', '.join(approver_roles)}",
            )
        return principal
    if approver_roles:
        raise ReviewerRefused(
            403, "reviewer",
            "an authenticated reviewer is required (App Service authentication) whose role or group is one of "
            f"APPROVER_ROLES: {', '.join(approver_roles)}",
        )
    if body_reviewer is None:
        raise ReviewerRefused(
            400, "reviewer",
            "is required without App Service authentication: who decides, 1-128 characters (recorded as unauthenticated)",
        )
    if not isinstance(body_reviewer, str) or not body_reviewer.strip() or len(body_reviewer) > MAX_REVIEWER_CHARS \
            or _CONTROL.search(body_reviewer):
        raise ReviewerRefused(400, "reviewer", "must be a name of 1-128 characters without control characters")
    return Reviewer(body_reviewer.strip(), False)
