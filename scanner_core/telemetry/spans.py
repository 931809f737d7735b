"""Spans around the stages of a scan; no-ops until ``setup.py`` switches telemetry on.

A trace per scan: the root span ``scan`` (``traced_scan`` on ``Scanner.scan``) and
one child per stage, put where the work is done: ``pre-flight`` (preflight.py),
``DB`` (``ensure_database``), ``trivy`` (``Trivy.scan``), ``upload``
(``upload_report``), ``index`` (``record_in_index``), ``follow-up`` (the monitor's
changes and notifications). Attributes are few and chosen (audit id, image
reference, result, reason, status, counts); string values pass the redactor's
credential patterns, and exceptions are recorded by type only (their text may
quote a URL), so no secret reaches an attribute.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from ..redact import Redactor

SCAN_SPANS = ("pre-flight", "DB", "trivy", "upload", "index", "follow-up")
_MAX_VALUE_CHARS = 512
_redact = Redactor()
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _State:
    tracer: Any = None  # an OpenTelemetry Tracer once switched on
    instruments: Any = None  # instruments.Instruments once switched on


STATE = _State()


def telemetry_active() -> bool:
    return STATE.tracer is not None or STATE.instruments is not None


def clean(attributes: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Only scalar values; strings through the redactor's patterns, and cut."""
    kept: dict[str, str | int | float | bool] = {}
    for key, value in attributes.items():
        if isinstance(value, bool | int | float):
            kept[key] = value
        elif isinstance(value, str) and value:
            kept[key] = _redact(value)[:_MAX_VALUE_CHARS]
    return kept


@contextmanager
def tracer_span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` (a child of the current one), or nothing when telemetry is off."""
    tracer = STATE.tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name, attributes=clean(attributes), record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as error:
            _failed(span, error)
            raise


def traced(name: str) -> Callable[[F], F]:
    """Decorator: the call runs in ``tracer_span(name)``."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if STATE.tracer is None:
                return function(*args, **kwargs)
            with tracer_span(name):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def traced_scan(method: F) -> F:
    """Decorator for ``Scanner.scan(request, ...)``: the root span ``scan``, its outcome
    as attributes, and the audit counted in the metrics."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if not telemetry_active():
            return method(self, request, *args, **kwargs)
        attributes = {"scanner.audit_id": request.audit_id, "scanner.image": request.image or ""}
        with tracer_span("scan", **attributes) as span:
            outcome = method(self, request, *args, **kwargs)
            meta = outcome.meta
            if span is not None:
                span.set_attributes(clean(audit_attributes(meta)))
            if STATE.instruments is not None:
                STATE.instruments.record_audit(meta)
            return outcome

    return wrapper  # type: ignore[return-value]


def audit_attributes(meta: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "scanner.audit_result": meta.audit_result.value,
        "scanner.failure_reason": meta.failure_reason or "",
        "scanner.scan_status": meta.scan_status or "",
        "scanner.image_digest": meta.image_digest or "",
        "scanner.trigger": meta.trigger or "",
    }
    if meta.scan_duration_ms is not None:
        attributes["scanner.scan_duration_ms"] = meta.scan_duration_ms
    for severity, count in (meta.vulnerabilities or {}).items():
        attributes[f"scanner.vulnerabilities.{severity}"] = int(count)
    return attributes


def _failed(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode  # loaded already: telemetry is on

    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
