"""The HTTP API per image (issue 10): the verdict (by tag or by digest, with the image's
approval and ``allowed``), the repository's history, and the dashboard page
(``static/dashboard.html``). The routes and their answers: docs/api.md.

``name`` is a repository as in the scan route (``redis``, or percent-encoded
``myacr.azurecr.io%2Fteam%2Fapp``); it is compared in its canonical form
(``docker.io/library/redis``), as the index stores it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path
from urllib.parse import quote, urlencode

import azure.functions as func

from ..errors import RequestError
from ..registry import parse_image_reference
from .http_api import ApiContext, row_document
from .responses import ApiError, answer, flag_param, json_response, limit_param, route_segment
from .verdicts import find_verdict

DASHBOARD_PAGE = Path(__file__).with_name("static") / "dashboard.html"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def image_verdict(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET images/{name}/{tag}/verdict`` and ``GET images/{name}/verdict?digest=``."""

    def run() -> func.HttpResponse:
        repository = _repository(req)
        tag = route_segment(req, "tag") if req.route_params.get("tag") else None
        digest = _digest(req.params.get("digest")) if req.params.get("digest") else None
        if tag is not None and _DIGEST.fullmatch(tag):
            tag, digest = None, _digest(tag, "tag")
        if tag is None and digest is None:
            raise ApiError(400, "missing-field", "is required: the image's manifest digest, sha256:<64 hex>", "digest")
        if tag is not None:
            parse_image_reference(f"{repository}:{tag}", field="tag")
        enqueue = flag_param(req.params.get("enqueue"), "enqueue", default=False)
        document = find_verdict(ctx, repository, tag, digest)
        if document is None:
            wanted = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            queued = _queue_unscanned(ctx, f"{repository}{wanted}", digest) if enqueue else ""
            raise ApiError(404, "not-found", f"{repository}{wanted} has never been scanned by this scanner{queued}",
                           "image")
        return json_response(200, document)

    return answer(req, ("GET",), run)


def image_history(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET images/{name}/history``: a page of the repository's audits, newest first."""

    def run() -> func.HttpResponse:
        name = route_segment(req, "name")
        repository = _repository(req)
        limit = limit_param(req.params.get("limit"))
        with ctx.audit_index() as index:
            rows, next_cursor = index.repository_page(repository, limit, req.params.get("cursor") or None)
        next_link = None
        if next_cursor:
            query = urlencode({"limit": limit, "cursor": next_cursor})
            next_link = ctx.path(f"images/{quote(name, safe='')}/history") + f"?{query}"
        return json_response(
            200,
            {
                "repository": repository,
                "audits": [row_document(row, ctx) for row in rows],
                "limit": limit,
                "next-cursor": next_cursor,
                "links": {"next": next_link},
            },
        )

    return answer(req, ("GET",), run)


def dashboard(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET dashboard``: the static page, with a Content-Security-Policy that allows
    its own inline script and style (by hash) and requests to this origin only."""

    def run() -> func.HttpResponse:
        page, policy = _page()
        headers = {
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",  # the page's URL carries the function key
            "Cache-Control": "no-store",
        }
        return func.HttpResponse(page, status_code=200, mimetype="text/html", charset="utf-8", headers=headers)

    return answer(req, ("GET",), run)


# -- the parts ---------------------------------------------------------------


@functools.cache
def _page() -> tuple[bytes, str]:
    """The page and its CSP; read once per process (an explicit per-process cache)."""
    page = DASHBOARD_PAGE.read_bytes()
    text = page.decode("utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() for body in bodies)
        return " ".join(f"'sha256-{d}'" for d in digests)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, policy


def _repository(req: func.HttpRequest) -> str:
    name = route_segment(req, "name")
    try:
        reference = parse_image_reference(name, field="name")
    except RequestError as error:
        raise ApiError(400, "invalid-field", str(error).removeprefix("name: "), "name") from None
    if reference.tag or reference.digest:
        raise ApiError(400, "invalid-field", f"{name!r} must be a repository name without tag or digest", "name")
    return f"{reference.registry}/{reference.repository}"


def _queue_unscanned(ctx: ApiContext, image: str, digest: str | None) -> str:
    """``?enqueue=true`` (issue 25): a scan queued as admission queues it (once per window, the
    registry allowlist applied); the sentence the 404 adds."""
    from ..admission import load_admission_settings
    from ..errors import ConfigurationError
    from ..registry import allowed_reference
    from .admission_gate import queue_admission_scan

    try:
        settings = load_admission_settings()
    except ConfigurationError as error:
        raise ApiError(500, "configuration-error", f"the scanner is misconfigured: {'; '.join(error.problems)}") from None
    queued, why = queue_admission_scan(ctx, allowed_reference(image, "image"), digest, settings, namespace="verdict-api")
    return f"; a scan was queued (audit {queued})" if queued else f"; {why}"


def _digest(value: str, field: str = "digest") -> str:
    if not _DIGEST.fullmatch(value):
        raise ApiError(400, "invalid-field", f"{value!r} is not allowed: sha256:<64 lower-case hex digits>", field)
    return value
