"""Admission (issue 25): what a cluster asks and what it is told. Kubernetes'
``AdmissionReview`` and Gatekeeper's ``ProviderRequest`` parsed into image references,
the decision over the images' verdicts, tag resolution with a short cache, the client
certificate check, and the enqueue-once ledger for unscanned images.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AdmissionSettings": ".settings",
    "load_admission_settings": ".settings",
    "AdmissionBodyError": ".review",
    "AdmissionReview": ".review",
    "ContainerImage": ".review",
    "ProviderRequest": ".review",
    "WORKLOAD_KINDS": ".review",
    "parse_admission_review": ".review",
    "parse_provider_request": ".review",
    "ImageOutcome": ".decision",
    "AdmissionDecision": ".decision",
    "decide": ".decision",
    "outcome_of": ".decision",
    "ClientCertificateRefused": ".client_cert",
    "check_client_certificate": ".client_cert",
    "TagResolver": ".tags",
    "registry_digest": ".tags",
    "tag_resolver": ".tags",
    "TtlCache": ".ttl_cache",
    "process_cache": ".ttl_cache",
    "Claim": ".ledger",
    "EnqueueLedger": ".ledger",
    "enqueue_ledger": ".ledger",
    "NamespaceRateLimit": ".ledger",
    "rate_limit": ".ledger",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
