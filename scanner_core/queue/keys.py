"""JSON keys matched case-insensitively, in any of the spellings producers use.

The contract's keys are kebab-case (``image-full-name``); the design's own
backend (joseki, .NET with Newtonsoft) writes PascalCase (``ImageFullName``),
and JavaScript producers camelCase (``imageFullName``). A key matches a field
when both are equal once case and ``-``/``_`` are ignored; unknown keys are
left as they are, so validation names them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..errors import RequestError


def squash(key: str) -> str:
    return key.replace("-", "").replace("_", "").lower()


def canonical_keys(document: Any, model: type[BaseModel], path: str = "") -> Any:
    """``document`` with every key of ``model`` (and of its nested models) in the
    model's own spelling; raises ``RequestError`` when two keys name one field."""
    if not isinstance(document, dict):
        return document
    fields = {squash(field.alias or name): (field.alias or name, field.annotation) for name, field in model.model_fields.items()}
    result: dict[Any, Any] = {}
    for key, value in document.items():
        name, annotation = fields.get(squash(key), (key, None)) if isinstance(key, str) else (key, None)
        if name in result:
            raise RequestError(f"{path}{name}", f"is given more than once (as {key!r} and in another spelling)")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            value = canonical_keys(value, annotation, f"{path}{name}.")
        result[name] = value
    return result
