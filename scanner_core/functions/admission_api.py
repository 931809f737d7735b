"""The admission routes (issue 25): ``POST admission/review`` answers a Kubernetes
``AdmissionReview`` (admission.k8s.io/v1) for a Pod or a workload's pod template;
``POST admission/provider`` answers Gatekeeper's external data ``ProviderRequest``
(externaldata.gatekeeper.sh/v1beta1) with a ``ProviderResponse``. Wiring and settings:
docs/admission.md; the routes: docs/api.md#admission.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import azure.functions as func

from ..admission import (
    AdmissionBodyError,
    AdmissionSettings,
    ClientCertificateRefused,
    check_client_certificate,
    decide,
    load_admission_settings,
    parse_admission_review,
    parse_provider_request,
)
from ..config import load_config_cached
from ..errors import ConfigurationError
from ..telemetry import active_instruments
from .admission_gate import GateResult, check_images
from .http_api import ApiContext, Handler
from .responses import ApiError, answer, json_response

_log = logging.getLogger("scanner_core.admission")
CLIENT_CERT_HEADER = "X-ARR-ClientCert"
_counts: dict[str, int] = {}  # per-process decisions by kind: logged with each one (an explicit per-process cache)
_contexts: dict[tuple[Any, ...], ApiContext] = {}  # the context per environment (an explicit per-process cache)
_contexts_lock = threading.Lock()


def serve_admission(handler: Handler, req: func.HttpRequest, app_root: Path) -> func.HttpResponse:
    """``http_api.serve`` for the admission budget: the context (configuration, queue, encoding) is
    built once per process while the environment and the configuration files stay the same
    (``load_config_cached``), not per request; a bad configuration is a 500 naming the settings."""
    try:
        config = load_config_cached()
        key = (tuple(sorted(os.environ.items())), id(config), str(app_root))
        with _contexts_lock:
            ctx = _contexts.get(key)
        if ctx is None:
            ctx = replace(ApiContext.from_environment(app_root), config=config)
            with _contexts_lock:
                _contexts.clear()
                _contexts[key] = ctx
    except ConfigurationError as error:
        return ApiError(500, "configuration-error",
                        f"the scanner is misconfigured: {'; '.join(error.problems)}").response()
    return handler(req, ctx)


def admission_review(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST admission/review``: one ``AdmissionReview`` in, the same kind out with ``response``."""

    def run() -> func.HttpResponse:
        settings = _settings_and_caller(req)
        review, containers = _parsed(lambda: parse_admission_review(req.get_body()))
        request = review.request
        namespace = request.namespace or ""
        response: dict[str, Any] = {"uid": request.uid, "allowed": True}
        if namespace in settings.exempt_namespaces or not containers:
            _record("exempt" if containers else "no-images", request.uid, namespace, [])
            _count("exempt", settings.mode, unscanned=False)
            return _review_answer(response)
        results = check_images(ctx, [c.image for c in containers], settings, namespace=namespace,
                               dry_run=request.dry_run)
        decision = decide([r.outcome for r in results], settings.mode, settings.unscanned)
        response["allowed"] = decision.allowed
        if decision.message:
            response["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
        if decision.warnings:
            response["warnings"] = decision.warnings
        if decision.refused and settings.mode == "audit":
            response["auditAnnotations"] = {"refused-images": ", ".join(o.image for o in decision.refused)[:1000]}
        kind = "allowed" if not decision.refused else ("denied" if not decision.allowed else settings.mode)
        _record(kind, request.uid, namespace, [f"{o.image}: {o.reason}" for o in decision.refused])
        _count("denied" if not decision.allowed else "audit-refused" if decision.refused and settings.mode == "audit"
               else "warned" if decision.warnings else "allowed", settings.mode,
               unscanned=any(r.outcome.state == "unscanned" for r in results))
        return _review_answer(response)

    return answer(req, ("POST",), run)


def admission_provider(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST admission/provider``: one item per key, the verdict document as its value."""

    def run() -> func.HttpResponse:
        settings = _settings_and_caller(req)
        provider = _parsed(lambda: parse_provider_request(req.get_body()))
        keys = provider.request.keys
        results = check_images(ctx, keys, settings, namespace="gatekeeper", dry_run=False)
        items = [_item(key, result, settings) for key, result in zip(keys, results)]
        return json_response(200, {"apiVersion": "externaldata.gatekeeper.sh/v1beta1", "kind": "ProviderResponse",
                                   "response": {"idempotent": True, "items": items, "systemError": ""}})

    return answer(req, ("POST",), run)


# -- the parts ---------------------------------------------------------------


def _settings_and_caller(req: func.HttpRequest) -> AdmissionSettings:
    """The settings, and the caller's client certificate when ``ADMISSION_AUTH=client-certificate``
    (with ``function-key`` the host has checked ``x-functions-key`` before the function ran)."""
    try:
        settings = load_admission_settings()
    except ConfigurationError as error:
        raise ApiError(500, "configuration-error", f"the scanner is misconfigured: {'; '.join(error.problems)}") from None
    if settings.auth == "client-certificate":
        try:
            check_client_certificate(req.headers.get(CLIENT_CERT_HEADER), settings)
        except ClientCertificateRefused as refused:
            code = "unauthenticated" if refused.status == 401 else "forbidden"
            raise ApiError(refused.status, code, refused.message, CLIENT_CERT_HEADER) from None
    return settings


def _parsed(parse: Any) -> Any:
    try:
        return parse()
    except AdmissionBodyError as error:
        code = "body-too-large" if error.status == 413 else "invalid-admission-request"
        raise ApiError(error.status, code, error.message, error.field) from None


def _review_answer(response: dict[str, Any]) -> func.HttpResponse:
    return json_response(200, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})


def _item(key: str, result: GateResult, settings: AdmissionSettings) -> dict[str, Any]:
    outcome = result.outcome
    if outcome.state == "unresolved":
        return {"key": key, "error": f"{key}: {outcome.reason}"}
    if outcome.state == "exempt":
        return {"key": key, "value": {"allowed": True, "exempt": True}, "error": ""}
    if outcome.state == "unscanned":
        return {"key": key, "error": "", "value": {"allowed": settings.unscanned != "deny", "unscanned": True,
                                                   "digest": outcome.digest, "queued-audit-id": outcome.queued}}
    value = dict(result.verdict or {})
    value["admission"] = {"state": outcome.state, "reason": outcome.reason, "digest": outcome.digest,
                          **({"deadline": outcome.deadline} if outcome.deadline else {})}
    return {"key": key, "value": value, "error": ""}


def _count(decision: str, mode: str, *, unscanned: bool) -> None:
    """``trivy_scanner_admission_decisions`` (OpenTelemetry, for Azure Monitor) when telemetry is on."""
    if (instruments := active_instruments()) is not None:
        instruments.record_admission(decision, mode, unscanned)


def _record(kind: str, uid: str, namespace: str, refused: list[str]) -> None:
    with _contexts_lock:
        _counts[kind] = count = _counts.get(kind, 0) + 1
    level = logging.WARNING if refused else logging.INFO
    _log.log(level, "admission review %s: %s in namespace %r (%d so far on this instance)%s", uid, kind, namespace,
             count, "; refused: " + "; ".join(refused)[:2000] if refused else "")

