"""Configuration problems as one line each, never quoting a secret."""

from __future__ import annotations

from typing import Any

from ..yaml_files import file_problem
from .settings import SECRET_SETTINGS


def describe_error(error: Any, source: str = "") -> str:
    """One problem line. The value is quoted only for environment settings that are
    not secret: a value from the YAML file may be (or contain) a registry entry with
    its password, even when the error is about a parent field."""
    if source:
        return file_problem(error, source)
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    quotable = error["type"] != "missing" and str(error["loc"][0]) not in SECRET_SETTINGS
    shown = f" (got {error['input']!r})" if quotable else ""
    return f"{location}: {message}{shown}"
