"""A DOUBLE of Azure AD as a function app sees it: the App Service managed-identity
endpoint, minting signed JWT access tokens.

Protocol: Microsoft's "How to use managed identities for App Service and Azure
Functions", REST endpoint reference. The platform sets ``IDENTITY_ENDPOINT``
and ``IDENTITY_HEADER``; a client sends ``GET <endpoint>?api-version=2019-08-01
&resource=<resource>[&client_id=<id>|&principal_id=<id>]`` with header
``X-IDENTITY-HEADER: <secret>`` and gets ``{"access_token", "expires_on",
"resource", "token_type", "client_id"}`` (``expires_on`` in epoch seconds).
The real ``azure-identity`` (``ManagedIdentityCredential``,
``DefaultAzureCredential``) talks to it unchanged.

Tokens carry the claims Azure AD puts in v1 access tokens (``aud`` = the
resource, ``iss`` = ``https://sts.windows.net/<tid>/``, ``tid``, ``oid``,
``appid``, ``iat``/``nbf``/``exp``) and are RS256-signed with a key made in
the test, so the other doubles (the ACR token service) can verify them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

API_VERSION = "2019-08-01"
DEFAULT_LIFETIME = 3600


@dataclass(frozen=True)
class Identity:
    """A managed identity: ``client_id`` (appid), ``principal_id`` (oid), its tenant."""

    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class TokenMinter:
    """Signs Azure-AD-shaped access tokens with one RSA key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()

    def mint(self, identity: Identity, resource: str, *, lifetime: int = DEFAULT_LIFETIME,
             tenant_id: str | None = None, audience: str | None = None) -> tuple[str, int]:
        """``(token, expires_on)``; a negative ``lifetime`` makes an expired token."""
        now = int(time.time())
        tenant = tenant_id or identity.tenant_id
        expires_on = now + lifetime
        claims = {
            "aud": audience or resource,
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": min(now, expires_on) - 60,
            "nbf": min(now, expires_on) - 60,
            "exp": expires_on,
            "tid": tenant,
            "oid": identity.principal_id,
            "sub": identity.principal_id,
            "appid": identity.client_id,
            "idtyp": "app",
            "ver": "1.0",
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.key_id})
        return token, expires_on

    def verify(self, token: str, audiences: list[str]) -> dict[str, Any]:
        """The claims of a token this minter signed, checking signature, expiry and audience.

        Raises ``jwt.InvalidTokenError`` (``ExpiredSignatureError``, ``InvalidAudienceError``...).
        """
        return jwt.decode(token, self.public_key, algorithms=["RS256"], audience=audiences)


class ManagedIdentityEndpoint:
    """The endpoint double: ``with ManagedIdentityEndpoint() as msi: msi.environment()``.

    ``system`` is the system-assigned identity; ``user_assigned`` more, selected by
    ``client_id`` or ``principal_id``. ``lifetime`` (``lifetimes`` per resource) and ``audience_override`` let a
    test hand out expired or wrong-audience tokens; ``requests`` records
    ``(resource, client_id)`` per call.
    """

    def __init__(self, *, system: Identity | None = None, user_assigned: tuple[Identity, ...] = ()) -> None:
        self.system = system or Identity()
        self.user_assigned = list(user_assigned)
        self.minter = TokenMinter()
        self.header_secret = secrets.token_urlsafe(24)
        self.lifetime = DEFAULT_LIFETIME
        self.lifetimes: dict[str, int] = {}  # per resource, over ``lifetime``
        self.audience_override: str | None = None
        self.requests: list[tuple[str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"endpoint": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/msi/token"

    def environment(self) -> dict[str, str]:
        """The variables App Service sets on a function app with a managed identity."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header_secret}

    # -- the protocol --------------------------------------------------------

    def answer(self, query: dict[str, str], header: str | None) -> tuple[int, dict[str, Any]]:
        if header != self.header_secret:
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
        if query.get("api-version") != API_VERSION:
            return 400, {"statusCode": 400, "message": f"api-version must be {API_VERSION}"}
        resource = query.get("resource")
        if not resource:
            return 400, {"statusCode": 400, "message": "resource is required"}
        identity = self._select(query.get("client_id"), query.get("principal_id") or query.get("object_id"))
        if identity is None:
            return 400, {"statusCode": 400, "message": "no managed identity with that id is assigned to this app"}
        self.requests.append((resource, query.get("client_id")))
        lifetime = self.lifetimes.get(resource, self.lifetime)
        token, expires_on = self.minter.mint(identity, resource, lifetime=lifetime,
                                             audience=self.audience_override)
        return 200, {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }

    def _select(self, client_id: str | None, principal_id: str | None) -> Identity | None:
        if client_id is None and principal_id is None:
            return self.system
        for identity in [self.system, *self.user_assigned]:
            if identity.client_id == client_id or identity.principal_id == principal_id:
                return identity
        return None


class _Handler(BaseHTTPRequestHandler):
    endpoint: ManagedIdentityEndpoint

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        status, body = self.endpoint.answer(query, self.headers.get("X-IDENTITY-HEADER"))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return
