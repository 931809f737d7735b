"""The approval policy (issue 15): ordered rules over what an audit knows,
first match wins, each decision naming its rule and why.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "Policy": ".evaluate",
    "RuleExplanation": ".evaluate",
    "DEFAULT_RULE": ".evaluate",
    "Exploit": ".facts",
    "ExploitLookup": ".facts",
    "PolicyFacts": ".facts",
    "facts_from_audit": ".facts",
    "builtin_policy": ".load",
    "load_policy": ".load",
    "LICENSE_CATEGORIES": ".rules",
    "Deadline": ".grace",
    "RevocationPolicy": ".grace",
    "Threat": ".grace",
    "owner_refusal": ".owners",
    "PolicyFile": ".rules",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
