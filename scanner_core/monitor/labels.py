"""The label of an image found under a tag and scanned by digest."""

from __future__ import annotations

from ..registry import ImageReference


def tag_label(text: str | None, image: ImageReference, tag: str | None) -> str | None:
    """``repo:tag@digest`` for ``repo@digest`` labelled ``tag`` (what the meta's
    ``image`` says, so that readers see the tag); ``text`` unchanged otherwise."""
    if text is None or tag is None or image.digest is None or image.tag is not None:
        return text
    name, _, digest = text.partition("@")
    return f"{name}:{tag}@{digest}"
