"""A request's scan target and the label its audit records."""

from __future__ import annotations

from ..audit import ScanRequest
from ..errors import RequestError
from ..registry import ImageReference, current_guard, image_name_from_archive, parse_image_reference
from ..trivy import ScanTarget


def scan_target(request: ScanRequest) -> tuple[ScanTarget, str]:
    """What trivy scans (a registry image, a tarball, or both) and the audit's ``image`` label."""
    image: ImageReference | None = None
    if request.image:
        image = parse_image_reference(request.image, request.image_field)
        # ALLOWED_REGISTRIES and the address guard, before any connection: permanent registry-not-allowed.
        current_guard().check_image(image, request.image_field)
    if request.input_tar is not None:
        if not request.input_tar.is_file():
            raise RequestError("input", f"{request.input_tar} does not exist or is not a file")
        label = request.image or image_name_from_archive(request.input_tar) or request.input_tar.name
        return ScanTarget(image=image, input_tar=request.input_tar), label
    if image is None:
        raise RequestError("image", "an image reference or an image tarball is required")
    return ScanTarget(image=image), tag_label(request.image, image, request.tag) or image.canonical


def tag_label(text: str | None, image: ImageReference, tag: str | None) -> str | None:
    """``repo:tag@digest`` for ``repo@digest`` labelled ``tag`` (the monitor loop's label of a
    digest found under a tag: what the meta's ``image`` says, so that readers see the tag);
    ``text`` unchanged otherwise."""
    if text is None or tag is None or image.digest is None or image.tag is not None:
        return text
    name, _, digest = text.partition("@")
    return f"{name}:{tag}@{digest}"
