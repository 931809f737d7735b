"""trivy's JSON report, decoded natively (msgspec typed structs) in one streaming pass:
every field the meta, the policy's facts, the changes, the exploit feeds, licences and
secrets need, and nothing else (issue 26).

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "DecodedReport": ".documents",
    "Licence": ".documents",
    "ReportResult": ".documents",
    "Vulnerability": ".documents",
    "listed": ".documents",
    "ReportDecoder": ".decoder",
    "decode_report": ".decoder",
    "write_packages_only": ".inventory",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
