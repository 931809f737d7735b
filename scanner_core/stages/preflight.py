"""Before trivy pulls an image: which platform, which manifests, how big.

The registry is asked for the image's manifest with the same credentials and
TLS rules trivy gets. An index is resolved to the platform to scan (the
request's, else ``TRIVY_PLATFORM``, else ``linux/amd64`` as trivy does); a
missing platform fails at once (``platform-not-found``). The compressed size
of the platform's layers is checked against ``MAX_IMAGE_SIZE_MB`` and the free
space in the scratch dir (``image-too-large``). When the registry cannot be
asked, the scan goes on without these facts and trivy has the last word.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import ScannerConfig, Settings
from ..errors import FailureKind, ScanFailed
from ..log import ScanLogger
from ..registry import (
    Credentials,
    ImageFacts,
    ImageReference,
    Platform,
    RegistryApiError,
    find_credentials,
    inspect_image,
    parse_platform,
    resolve_credentials,
)
from ..telemetry import traced
from ..trivy import ScanTarget

_MIB = 1024 * 1024
_MAX_REQUEST_SECONDS = 15.0


@dataclass(frozen=True)
class Preflight:
    platform: Platform | None
    facts: ImageFacts | None = None


@traced("pre-flight")
def preflight(config: ScannerConfig, platform: Platform | None, target: ScanTarget, log: ScanLogger) -> Preflight:
    """For a registry image: its manifests (resolved to ``platform``) and its size, checked."""
    settings = config.settings
    if target.image is None or target.input_tar is not None:
        return Preflight(platform)
    registry = find_credentials(target.image, config.file.registries)
    facts = inspect_before_pull(target.image, platform, resolve_credentials(registry),
                                bool(registry and registry.insecure), log, settings.trivy_timeout_ms)
    return Preflight(platform, facts)


def scratch_dir(settings: Settings) -> Path:
    """``SCAN_SCRATCH_DIR`` (created when missing), else the system temp dir."""
    path = settings.scan_scratch_dir or Path(tempfile.gettempdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def requested_platform(settings: Settings, platform: str | None, field: str) -> Platform | None:
    """The request's platform (validated, ``InvalidPlatform`` naming ``field``), else ``TRIVY_PLATFORM``."""
    if platform:
        return parse_platform(platform, field)
    return parse_platform(settings.trivy_platform, "TRIVY_PLATFORM") if settings.trivy_platform else None


def inspect_before_pull(
    image: ImageReference,
    platform: Platform | None,
    credentials: Credentials | None,
    insecure: bool,
    log: ScanLogger,
    timeout_ms: int = 0,
) -> ImageFacts | None:
    """Each request gets a fifth of TRIVY_TIMEOUT (at most 15 s): a registry that does not
    answer must not hold the scan much longer than trivy's own deadline would."""
    timeout = _MAX_REQUEST_SECONDS if timeout_ms <= 0 else max(0.5, min(_MAX_REQUEST_SECONDS, timeout_ms / 5000))
    try:
        return inspect_image(image, platform, credentials=credentials, insecure=insecure, timeout=timeout)
    except RegistryApiError as error:
        log.warning("the image's manifest could not be read before the scan; trivy decides",
                    fields={"reason": error.reason, "error": str(error)})
        return None


def check_size(facts: ImageFacts | None, settings: Settings, scratch: Path) -> None:
    """``image-too-large`` (permanent) when the image's compressed size exceeds
    ``MAX_IMAGE_SIZE_MB`` or the free space in the scratch dir."""
    if facts is None or facts.compressed_size is None:
        return
    size = facts.compressed_size
    limit = settings.max_image_size_mb
    if limit is not None and size > limit * _MIB:
        raise ScanFailed(
            f"the image is {_mib(size)} compressed, more than MAX_IMAGE_SIZE_MB={limit} MiB",
            kind=FailureKind.PERMANENT, reason="image-too-large",
        )
    free = shutil.disk_usage(scratch).free
    if size > free:
        raise ScanFailed(
            f"the image is {_mib(size)} compressed, more than the {_mib(free)} free in the scratch dir {scratch} "
            "(SCAN_SCRATCH_DIR)",
            kind=FailureKind.PERMANENT, reason="image-too-large",
        )


def _mib(size: int) -> str:
    return f"{size / _MIB:.1f} MiB ({size} bytes)"
