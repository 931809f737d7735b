"""Container registries: image references, image tarballs' names, and the
credentials configured for each registry.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "EgressProxy": ".egress",
    "egress_proxy": ".egress",
    "Credentials": ".credentials",
    "resolve_credentials": ".credentials",
    "RegistryApi": ".api",
    "Manifest": ".api",
    "RegistryApiError": ".api",
    "TagLimits": ".api",
    "TagListing": ".api",
    "image_name_from_archive": ".archive",
    "RegistryCredentials": ".credentials",
    "find_credentials": ".credentials",
    "DOCKER_HUB": ".reference",
    "ACR_USERNAME": ".acr",
    "acr_refresh_token": ".acr",
    "forget_refresh_tokens": ".acr",
    "is_acr_host": ".acr",
    "ImageReference": ".reference",
    "parse_image_reference": ".reference",
    "DEFAULT_PLATFORM": ".platform",
    "InvalidPlatform": ".platform",
    "Platform": ".platform",
    "offered_platforms": ".platform",
    "parse_platform": ".platform",
    "pick_platform": ".platform",
    "ImageFacts": ".inspect",
    "RegistryGuard": ".guard",
    "RegistryNotAllowed": ".guard",
    "allowed_reference": ".guard",
    "current_guard": ".guard",
    "parse_allowlist": ".guard",
    "use_resolver": ".guard",
    "GuardedSession": ".guarded_http",
    "inspect_image": ".inspect",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
