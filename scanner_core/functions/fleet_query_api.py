"""The fleet queries (issue 24, item 3): ``GET vulnerabilities/{id}/images`` and
``GET packages/{name}/images[?version=&type=]``, paged with cursors (``fleet_queries/``).
Each row carries the image's approval state, read per page (one read per distinct
approval request on the page, side by side): approvals change without an audit, so the
tables do not copy them. The routes and their cost: docs/api.md#fleet-queries.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from ..fleet_queries import (
    QueryPage,
    QueryTables,
    fleet_tables_connection,
    images_with_package,
    images_with_vulnerability,
    normalise_vulnerability_id,
    parse_version_range,
)
from ..io_pool import io_pool
from .approvals_api import approval_of
from .http_api import ApiContext
from .responses import ApiError, answer, json_response, limit_param, route_segment

_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,31}")
MAX_PACKAGE_CHARS = 214


def vulnerability_images(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET vulnerabilities/{id}/images``: the current images with that vulnerability."""

    def run() -> func.HttpResponse:
        asked = route_segment(req, "id")
        try:
            vulnerability_id = normalise_vulnerability_id(asked)
        except ValueError as error:
            raise ApiError(400, "invalid-field", str(error), "id") from None
        limit = limit_param(req.params.get("limit"))
        page = images_with_vulnerability(_tables(ctx), vulnerability_id, limit, req.params.get("cursor") or None)
        route = f"vulnerabilities/{quote(vulnerability_id, safe='')}/images"
        return _answer(ctx, {"vulnerability-id": vulnerability_id}, page, route, {"limit": limit})

    return answer(req, ("GET",), run)


def package_images(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET packages/{name}/images``: the current images containing that package."""

    def run() -> func.HttpResponse:
        name = route_segment(req, "name")
        if len(name) > MAX_PACKAGE_CHARS or not name.isprintable() or name != name.strip():
            raise ApiError(400, "invalid-field", f"must be a package name of 1 to {MAX_PACKAGE_CHARS} printable "
                           "characters without leading or trailing spaces", "name")  # fmt: skip
        kind = req.params.get("type") or None
        if kind is not None and not _TYPE.fullmatch(kind):
            raise ApiError(400, "invalid-field", f"{kind[:40]!r} is not allowed: a package URL type such as apk, deb, "
                           "rpm, maven, npm, pypi, golang, gem, cargo, nuget, composer (lower case)", "type")  # fmt: skip
        versions = None
        if (text := req.params.get("version")) is not None:
            try:
                versions = parse_version_range(text)
            except ValueError as error:
                raise ApiError(400, "invalid-field", str(error), "version") from None
        limit = limit_param(req.params.get("limit"))
        page = images_with_package(_tables(ctx), name, limit, req.params.get("cursor") or None, kind=kind,
                                   versions=versions)  # fmt: skip
        query = {"limit": limit, **({"type": kind} if kind else {}), **({"version": str(versions)} if versions else {})}
        document = {"package": name, "type": kind, "version": str(versions) if versions else None}
        return _answer(ctx, document, page, f"packages/{quote(name, safe='')}/images", query)

    return answer(req, ("GET",), run)


def _tables(ctx: ApiContext) -> QueryTables:
    connection = fleet_tables_connection(ctx.config.settings.fleet_tables_connection)
    if connection is None:
        raise ApiError(503, "fleet-tables-unavailable", "no storage connection for the fleet tables: set "
                       "FLEET_TABLES_CONNECTION (or AzureWebJobsStorage)")  # fmt: skip
    return QueryTables(connection, ctx.config.settings)


def _answer(ctx: ApiContext, document: dict[str, Any], page: QueryPage, route: str,
            query: dict[str, Any]) -> func.HttpResponse:  # fmt: skip
    keyed = [(row["repository"], row.pop("approval-digest") or row["digest"]) for row in page.rows]
    subjects = sorted(set(keyed), key=str)
    found = dict(zip(subjects, io_pool().map(lambda subject: approval_of(ctx, *subject), subjects)))
    images = [{**row, "approval": _state(found[subject])} for row, subject in zip(page.rows, keyed, strict=True)]
    next_link = None
    if page.next_cursor:
        next_link = ctx.path(route) + "?" + urlencode({**query, "cursor": page.next_cursor})
    return json_response(200, {**document, "images": images, "limit": query["limit"],
                               "next-cursor": page.next_cursor, "links": {"next": next_link}})  # fmt: skip


def _state(approval: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"id": approval["id"], "state": approval["state"]} if approval is not None else None
