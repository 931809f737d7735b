"""What every HTTP route module shares: the error answer, the method check that turns
typed errors into JSON answers, JSON bodies, and the common query parameters.

Every error is ``{"error": {"code", "field", "message"}}`` (the codes are listed in
docs/api.md). Handlers raise ``ApiError`` (or a typed ``RequestError``/``StorageError``);
``answer`` renders it, and anything unforeseen becomes a 500 without a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import azure.functions as func

from ..errors import RequestError, StorageError

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
JSON_MIMETYPE = "application/json"
_log = logging.getLogger("scanner_core.http_api")


class ApiError(Exception):
    """An error answer; raised by handlers, rendered by ``answer``."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    def response(self) -> func.HttpResponse:
        body = {"error": {"code": self.code, "field": self.field, "message": self.message}}
        return json_response(self.status, body, self.headers)


def json_response(status: int, document: Any, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(document), status_code=status, mimetype=JSON_MIMETYPE, charset="utf-8", headers=dict(headers or {})
    )


def answer(req: func.HttpRequest, methods: tuple[str, ...], run: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """Method check, then the handler; typed errors become JSON error answers."""
    if req.method.upper() not in methods:
        return ApiError(
            405,
            "method-not-allowed",
            f"{req.method.upper()} is not allowed here; allowed: {', '.join(methods)}",
            headers={"Allow": ", ".join(methods)},
        ).response()
    try:
        return run()
    except ApiError as error:
        return error.response()
    except RequestError as error:  # includes InvalidImageReference and InvalidCursor
        code = getattr(error, "reason", "invalid-field")  # registry-not-allowed
        return ApiError(400, code, str(error).removeprefix(f"{error.field}: "), error.field).response()
    except StorageError as error:
        _log.error("storage failure: %s", error)
        return ApiError(503, "storage-unavailable", str(error)).response()
    except Exception:  # an answer, never a stack trace; logged
        _log.exception("unexpected failure in %s %s", req.method, req.url.split("?", 1)[0])
        return ApiError(500, "internal-error", "an unexpected error occurred; see the function's logs").response()


def json_object(body: bytes, allowed: tuple[str, ...], example: str, *, empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object with only ``allowed`` keys; ``example`` shows the
    caller what is expected. ``empty``: an empty body is an empty object."""
    if not body.strip():
        if empty:
            return {}
        raise ApiError(400, "invalid-json", f"the request body is empty; expected a JSON object such as {example}")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(
            400, "invalid-json", f"the request body is not valid JSON ({error}); expected {example}"
        ) from None
    except RecursionError:  # json.loads recurses once per nesting level
        raise ApiError(
            400, "invalid-json", f"the request body is nested too deeply to be a request; expected {example}"
        ) from None
    if not isinstance(document, dict):
        raise ApiError(
            400,
            "invalid-json",
            f"the request body must be a JSON object, got {type(document).__name__}; expected {example}",
        )
    for key in document:
        if key not in allowed:
            raise ApiError(400, "unknown-field", f"unknown field; allowed fields: {', '.join(allowed)}", key)
    return document


def string_field(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, "invalid-field", f"must be a string, got {json.dumps(value)}", name)
    return value


def route_segment(req: func.HttpRequest, name: str) -> str:
    """A route value, percent-decoded once (the host leaves ``%2F`` encoded)."""
    value = req.route_params.get(name) or ""
    if not value:
        raise ApiError(400, "missing-field", "the route segment is empty", name)
    return unquote(value) if "%" in value else value


def limit_param(text: str | None) -> int:
    """``?limit=``: 1..``MAX_LIMIT``, ``DEFAULT_LIMIT`` when absent."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(
            400,
            "invalid-field",
            f"{text!r} is not allowed: an integer from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
            "limit",
        )
    return value


def flag_param(text: str | None, name: str, *, default: bool) -> bool:
    """A ``true``/``false`` query parameter."""
    if text is None or text == "":
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ApiError(400, "invalid-field", f"{text!r} is not allowed: true or false", name)
