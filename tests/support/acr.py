"""A DOUBLE of Azure Container Registry's token service, in front of the real
``docker-registry`` (distribution 2.8) running with token authentication.

Protocol: "Azure Container Registry integration with Azure Active Directory"
(``docs/AAD-OAuth.md`` in github.com/Azure/acr) and distribution's "Docker
Registry v2 authentication via central service" and "Token Authentication
Implementation" (JWT) specs. Like ACR, one host serves both:

* ``POST /oauth2/exchange`` (form: ``grant_type=access_token``, ``service``,
  ``tenant``, ``access_token``) → ``{"refresh_token": ...}``. The Azure AD token
  must be signed by the identity double's key, unexpired, for ARM's audience, of
  the registry's tenant (and ``tenant`` must be that tenant), and its ``oid`` must
  hold ``AcrPull`` or ``AcrPush`` on the registry; otherwise ``401`` with
  ``{"errors": [{"code": "UNAUTHORIZED", "message": ...}]}``. (Real ACR may
  instead grant an empty scope to an identity without a role, which the
  registry then answers with 401: clients see ``unauthorized`` either way.)
* ``GET /oauth2/token?service=&scope=`` with Basic auth: username
  ``00000000-0000-0000-0000-000000000000`` and an ACR refresh token as the
  password (what ``docker login`` with a refresh token does), or the admin
  user's name and password; and ``POST /oauth2/token`` (form:
  ``grant_type=refresh_token``, ``service``, ``scope``, ``refresh_token``) →
  ``{"access_token": ...}`` (GET also says ``token``): an RS256 JWT with
  ``iss``/``aud``/``access``, signed with a key whose certificate is the
  registry's ``rootcertbundle``, header ``kid`` = its libtrust key id.
* everything under ``/v2/`` is forwarded to the registry unchanged.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt

from .identity import TokenMinter
from .registry import SKOPEO_EXECUTABLE, Registry, RegistryError, write_auth_file
from .tls import self_signed

ACR_USERNAME = "00000000-0000-0000-0000-000000000000"
ISSUER = "Azure Container Registry"
ARM_AUDIENCES = ["https://management.azure.com", "https://management.azure.com/",
                 "https://containerregistry.azure.net", "https://containerregistry.azure.net/"]
REFRESH_LIFETIME = 3 * 3600
ACCESS_LIFETIME = 1200
_ROLE_ACTIONS = {"AcrPull": {"pull"}, "AcrPush": {"pull", "push"}}


class AcrDouble:
    """``with AcrDouble(workdir, minter, tenant_id) as acr: acr.address``.

    ``roles`` maps an identity's principal id (``oid``) to its role names on this
    registry. ``exchanges`` counts successful ``/oauth2/exchange`` calls; ``seen``
    records every request's method, path and headers, for leak checks.
    """

    def __init__(self, workdir: Path, minter: TokenMinter, tenant_id: str) -> None:
        self.workdir = workdir
        self.minter = minter
        self.tenant_id = tenant_id
        self.roles: dict[str, set[str]] = {}
        self.admin_username = "acradmin"
        self.admin_password = secrets.token_urlsafe(16)
        self.refresh_lifetime = REFRESH_LIFETIME
        self.exchanges = 0
        self.signer = self_signed(workdir / "token-signer", "acr-token-signer")
        handler = type("Handler", (_Handler,), {"acr": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self.registry = Registry(
            workdir / "registry",
            auth={"token": {
                "realm": f"http://{self.address}/oauth2/token",
                "service": self.address,
                "issuer": ISSUER,
                "rootcertbundle": str(self.signer.cert_path),
            }},
        )
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.registry.start()
        return self

    def stop(self) -> None:
        self.registry.stop()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------

    def push(self, tarball: Path, repository: str, tag: str) -> str:
        """Push a docker-archive through the front door as the admin user; returns the digest."""
        digest_file = self.workdir / "push.digest"
        auth_file = write_auth_file(self.workdir / "admin-auth.json", self.address, self.admin_username,
                                    self.admin_password)
        result = subprocess.run(
            [str(SKOPEO_EXECUTABLE), "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
             "--dest-authfile", str(auth_file), "--digestfile", str(digest_file),
             f"docker-archive:{tarball}", f"docker://{self.address}/{repository}:{tag}"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if result.returncode != 0:
            raise RegistryError(f"skopeo copy through the ACR double failed: {result.stderr.strip()}")
        return digest_file.read_text(encoding="utf-8").strip()

    def admin_bearer(self, repository: str) -> str:
        """An ``Authorization`` header value to push to ``repository`` directly (as the admin)."""
        _, body = self.token(self.admin_username, self.admin_password, self.address,
                             [f"repository:{repository}:pull,push"])
        return f"Bearer {body['access_token']}"

    # -- the token service ---------------------------------------------------

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "access_token":
            return 400, _error("UNSUPPORTED", "grant_type must be access_token")
        if form.get("service") != self.address:
            return 400, _error("INVALID", f"service must be {self.address}")
        try:
            claims = self.minter.verify(form.get("access_token", ""), ARM_AUDIENCES)
        except jwt.ExpiredSignatureError:
            return 401, _error("UNAUTHORIZED", "the Azure AD access token has expired")
        except jwt.InvalidTokenError as error:
            return 401, _error("UNAUTHORIZED", f"the Azure AD access token is invalid: {type(error).__name__}")
        if claims.get("tid") != self.tenant_id or form.get("tenant") != self.tenant_id:
            return 401, _error("UNAUTHORIZED", "the token's tenant is not the registry's tenant")
        actions = self._actions_for(str(claims.get("oid")))
        if not actions:
            return 401, _error("UNAUTHORIZED", "the identity has no role on this registry")
        now = int(time.time())
        refresh = self._sign({
            "jti": str(uuid.uuid4()), "sub": claims.get("oid"), "appid": claims.get("appid"),
            "iat": now, "nbf": now, "exp": now + self.refresh_lifetime, "iss": ISSUER, "aud": self.address,
            "version": "1.0", "grant_type": "refresh_token", "tenant": self.tenant_id,
        })
        self.exchanges += 1
        return 200, {"refresh_token": refresh}

    def token(self, username: str | None, password: str | None, service: str | None,
              scopes: list[str]) -> tuple[int, dict[str, Any]]:
        if service != self.address:
            return 400, _error("INVALID", f"service must be {self.address}")
        if username == self.admin_username and password == self.admin_password:
            subject, granted = "admin", {"pull", "push", "delete", "*"}
        elif username == ACR_USERNAME and password:
            try:
                claims = jwt.decode(password, self.signer.key.public_key(), algorithms=["RS256"],
                                    audience=self.address, issuer=ISSUER)
            except jwt.InvalidTokenError:
                return 401, _error("UNAUTHORIZED", "the refresh token is invalid or expired")
            subject, granted = str(claims["sub"]), self._actions_for(str(claims["sub"]))
        else:
            return 401, _error("UNAUTHORIZED", "authentication required")
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            allowed = [a for a in wanted.split(",") if a in granted or "*" in granted]
            if kind == "repository" and allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        token = self._sign({
            "jti": str(uuid.uuid4()), "sub": subject, "iat": now, "nbf": now - 10,
            "exp": now + ACCESS_LIFETIME, "iss": ISSUER, "aud": self.address, "access": access,
            "version": "1.0", "grant_type": "refresh_token",
        })
        return 200, {"access_token": token, "token": token, "expires_in": ACCESS_LIFETIME}

    def _actions_for(self, principal_id: str) -> set[str]:
        return set().union(*(_ROLE_ACTIONS.get(role, set()) for role in self.roles.get(principal_id, set())))

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.signer.key, algorithm="RS256", headers={"kid": self.signer.libtrust_key_id})


def _error(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


class _Handler(BaseHTTPRequestHandler):
    acr: AcrDouble
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        body = self._body()
        if parts.path.startswith("/v2"):
            self._forward(body)
        elif parts.path == "/oauth2/exchange" and self.command == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            self._json(*self.acr.exchange(form))
        elif parts.path == "/oauth2/token" and self.command == "GET":
            query = parse_qs(parts.query)
            username, password = self._basic()
            self._json(*self.acr.token(username, password, (query.get("service") or [None])[0],
                                       query.get("scope", [])))
        elif parts.path == "/oauth2/token" and self.command == "POST":
            form = parse_qs(body.decode())
            if (form.get("grant_type") or [""])[0] != "refresh_token":
                self._json(400, _error("UNSUPPORTED", "grant_type must be refresh_token"))
                return
            self._json(*self.acr.token(ACR_USERNAME, (form.get("refresh_token") or [""])[0],
                                       (form.get("service") or [None])[0], form.get("scope", [])))
        else:
            self._json(404, _error("NOT_FOUND", "no such endpoint"))

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _basic(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, None
        username, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return username, password

    def _forward(self, body: bytes) -> None:
        connection = http.client.HTTPConnection(self.acr.registry.address, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
        headers["Content-Length"] = str(len(body))
        connection.request(self.command, self.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        connection.close()

    def _json(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return
