"""Azure identities: the token credential (managed identity, workload identity,
developer sign-in) shared by Blob Storage, the queue and ACR.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "azure_credential": ".credential",
    "forget_credentials": ".credential",
    "identity_available": ".credential",
    "identity_label": ".credential",
    "token_claims": ".credential",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
