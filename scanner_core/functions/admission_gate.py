"""The gate for images a cluster is about to run (issue 25): each reference resolved to the
digest the node will pull (a tag through the registry, cached for a short TTL; a digest as
it is), its verdict from the one seam (``verdicts.find_verdict``), and an unknown digest
queued once (``trigger: admission``; the ledger deduplicates it for a window and limits each
namespace). Shared by the AdmissionReview and Gatekeeper routes and ``/verdict?enqueue=true``.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..admission import (
    AdmissionSettings,
    ImageOutcome,
    enqueue_ledger,
    outcome_of,
    process_cache,
    rate_limit,
    registry_digest,
    tag_resolver,
)
from ..errors import RequestError, ScanFailed, StorageError
from ..queue import build_message, enqueue
from ..registry import ImageReference, parse_image_reference
from .http_api import ApiContext
from .verdicts import find_verdict

LOOKUP_WORKERS = 32
_log = logging.getLogger("scanner_core.admission")
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class GateResult:
    """One image: its outcome and, when it was found, its verdict document."""

    outcome: ImageOutcome
    verdict: dict[str, Any] | None = None


def check_images(ctx: ApiContext, images: Sequence[str], settings: AdmissionSettings, *, namespace: str,
                 dry_run: bool) -> list[GateResult]:
    """Every image's outcome, looked up side by side, in the images' order (each distinct reference once)."""
    distinct = list(dict.fromkeys(images))
    if len(distinct) <= 1:
        found = [_check(ctx, image, settings, namespace, dry_run) for image in distinct]
    else:
        found = list(_lookup_pool().map(lambda image: _check(ctx, image, settings, namespace, dry_run), distinct))
    by_image = dict(zip(distinct, found))
    return [by_image[image] for image in images]


def queue_admission_scan(ctx: ApiContext, reference: ImageReference, digest: str | None, settings: AdmissionSettings,
                         namespace: str) -> tuple[str | None, str]:
    """Queues a scan of ``reference`` (by ``digest`` when known) unless one was queued in this window
    or the namespace is over its limit: the audit id of the scan queued (now or earlier) or ``None``,
    and why none was queued."""
    name = f"{reference.registry}/{reference.repository}"
    image = f"{name}@{digest}" if digest else reference.canonical
    now = time.time()
    audit_id = f"admission-{(digest or reference.tag or 'latest').split(':')[-1][:12]}-{int(now)}"
    ledger = enqueue_ledger(ctx.config.settings.blob_container_url, ctx.short_id, settings.enqueue_window_seconds)
    limit = rate_limit(settings.enqueue_per_namespace)
    try:
        claim = ledger.claim(image, audit_id, lambda: limit.admit(namespace))
    except StorageError as error:
        _log.error("admission: unscanned %s not queued: %s", image, error)
        return None, "its scan could not be queued (storage unavailable; see the scanner's logs)"
    if claim.limited:
        _log.warning("admission: unscanned %s not queued: namespace %r is over ADMISSION_ENQUEUE_PER_NAMESPACE (%d a "
                     "minute)", image, namespace, settings.enqueue_per_namespace)
        return None, (f"no scan was queued: namespace {namespace!r} queued its {settings.enqueue_per_namespace} a "
                      "minute (ADMISSION_ENQUEUE_PER_NAMESPACE); retry later")
    if not claim.won:
        return claim.audit_id, "" if claim.audit_id else "a scan is already queued by another instance"
    tag = reference.tag if digest and reference.tag else None
    message = build_message(image, audit_id, created_at=now, tag=tag, trigger="admission")
    try:
        enqueue(message, connection=ctx.queue_connection, queue_name=ctx.queue_name, encoding=ctx.message_encoding)
    except StorageError as error:
        _log.error("admission: unscanned %s not queued: %s", image, error)
        ledger.release(image)
        return None, "its scan could not be queued (queue unavailable; see the scanner's logs)"
    _log.info("admission: queued a scan of unscanned %s as audit %s (namespace %r)", image, audit_id, namespace)
    return audit_id, ""


# -- the parts ---------------------------------------------------------------


def _check(ctx: ApiContext, image: str, settings: AdmissionSettings, namespace: str, dry_run: bool) -> GateResult:
    try:
        reference = parse_image_reference(image, "image")
    except RequestError as error:
        return GateResult(ImageOutcome(image, "unresolved", f"not an image reference ({str(error)[:200]})"))
    if _exempt(reference, settings):
        return GateResult(ImageOutcome(image, "exempt", "ADMISSION_EXEMPT_IMAGES"))
    try:
        digest = tag_resolver(settings.tag_ttl_seconds).digest(reference, registry_digest(ctx.config))
    except (ScanFailed, RequestError) as error:  # RegistryApiError, RegistryNotAllowed
        return GateResult(ImageOutcome(image, "unresolved", f"its tag could not be resolved to a digest ({error})"))
    repository = f"{reference.registry}/{reference.repository}"
    verdicts = process_cache("verdicts", settings.verdict_ttl_seconds)  # ADMISSION_VERDICT_TTL_SECONDS
    verdict = verdicts.get(f"{ctx.short_id}|{repository}@{digest}", lambda: find_verdict(ctx, repository, None, digest))
    outcome = outcome_of(image, digest, verdict)
    if outcome.state == "unscanned" and not dry_run:
        queued, why = queue_admission_scan(ctx, reference, digest, settings, namespace)
        outcome = ImageOutcome(image, "unscanned", why or outcome.reason, digest, queued=queued)
    return GateResult(outcome, verdict)


def _exempt(reference: ImageReference, settings: AdmissionSettings) -> bool:
    """A glob of ``ADMISSION_EXEMPT_IMAGES`` matching the canonical reference or its repository."""
    name = f"{reference.registry}/{reference.repository}"
    return any(fnmatch.fnmatchcase(reference.canonical, glob) or fnmatch.fnmatchcase(name, glob)
               for glob in settings.exempt_images)


def _lookup_pool() -> ThreadPoolExecutor:
    """The process's pool for the images of a review (an explicit per-process cache); apart from
    ``io_pool``, whose tasks ``find_verdict`` itself waits on."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=LOOKUP_WORKERS, thread_name_prefix="admission")
        return _pool
