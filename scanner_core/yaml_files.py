"""Reading the operator's YAML files (``TRIVY_CONFIG_PATH``, ``POLICY_PATH``) and naming
their problems, one line each, without quoting a value: a file may hold a password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigurationError


def read_yaml_file(path: Path, source: str) -> object:
    """The YAML document at ``path``; ``ConfigurationError`` naming ``source`` (the setting)
    when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError([f"{source}: cannot be read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a password: say where, not what.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigurationError([f"{source}: not valid YAML{where}: {problem}"]) from None


def file_problem(error: Any, source: str) -> str:
    """One problem line for a pydantic error in the file named by ``source``: where and
    what, never the value (even an error about a parent field may hold a password)."""
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {location}: {message}"
