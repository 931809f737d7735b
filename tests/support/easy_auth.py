"""The headers App Service authentication ("Easy Auth") adds to a request it
let through, as documented in "Work with user identities in Azure App Service
authentication" (learn.microsoft.com/azure/app-service/configure-authentication-user-identities):
``X-MS-CLIENT-PRINCIPAL-NAME``, ``X-MS-CLIENT-PRINCIPAL-ID``,
``X-MS-CLIENT-PRINCIPAL-IDP`` and ``X-MS-CLIENT-PRINCIPAL``, base64 of
``{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}``. The app
trusts them only with ``WEBSITE_AUTH_ENABLED=True``, which the platform sets.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable

NAME_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_CLAIM = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


def principal_headers(name: str, roles: Iterable[str] = (), groups: Iterable[str] = ()) -> dict[str, str]:
    object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": object_id},
        {"typ": NAME_CLAIM, "val": name},
        {"typ": "preferred_username", "val": name},
        *({"typ": "roles", "val": role} for role in roles),
        *({"typ": "groups", "val": group} for group in groups),
    ]
    principal = {"auth_typ": "aad", "claims": claims, "name_typ": NAME_CLAIM, "role_typ": ROLE_CLAIM}
    return {
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode(),
        "X-MS-CLIENT-PRINCIPAL-NAME": name,
        "X-MS-CLIENT-PRINCIPAL-ID": object_id,
        "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    }
