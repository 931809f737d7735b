"""Loading the policy: the file at ``POLICY_PATH``, or the built-in default.

The built-in default is today's auto-rejection as rules: with
``TRIVY_AUTO_REJECT_CRITICAL=true``, ``auto-reject-critical`` rejects more
critical findings than ``TRIVY_CRITICAL_THRESHOLD``, and with
``TRIVY_FAIL_ON_EOSL=true`` too, ``auto-reject-eosl`` rejects an end-of-life
OS; everything else is for review. A bad file is one ``ConfigurationError``
naming each bad rule (by id and position) and field, with what it allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from ..errors import ConfigurationError
from ..yaml_files import file_problem, read_yaml_file
from .evaluate import Policy
from .grace import GraceCondition, RevocationPolicy
from .owners import ApproverEntry
from .rules import LicenseCounts, PolicyCve, PolicyFile, Rule, SeverityCounts

class PolicySettings(Protocol):
    """What loading the policy reads of the settings (``config.Settings`` has it all)."""

    @property
    def policy_path(self) -> Path | None: ...
    @property
    def trivy_auto_reject_critical(self) -> bool: ...
    @property
    def trivy_critical_threshold(self) -> int: ...
    @property
    def trivy_fail_on_eosl(self) -> bool: ...


def builtin_policy(settings: PolicySettings) -> Policy:
    """The policy when ``POLICY_PATH`` is unset: the same outcomes as the settings always had."""
    rules: list[dict[str, Any]] = []
    if settings.trivy_auto_reject_critical:
        threshold = settings.trivy_critical_threshold
        rules.append({"id": "auto-reject-critical", "action": "reject", "severity": {"critical": f"> {threshold}"}})
        if settings.trivy_fail_on_eosl:
            rules.append({"id": "auto-reject-eosl", "action": "reject", "eosl": True})
    source = "built-in (TRIVY_AUTO_REJECT_CRITICAL, TRIVY_CRITICAL_THRESHOLD, TRIVY_FAIL_ON_EOSL)"
    return Policy(PolicyFile.model_validate({"default": "review", "rules": rules}), source)


def load_policy(settings: PolicySettings) -> Policy:
    """The policy the scanner runs with; raises ``ConfigurationError`` for a bad file."""
    path = settings.policy_path
    return builtin_policy(settings) if path is None else read_policy_file(path)


def read_policy_file(path: Path) -> Policy:
    source = f"POLICY_PATH ({path})"
    raw = read_yaml_file(path, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigurationError([f"{source}: must be a mapping with rules, default and allow (got {type(raw).__name__})"])
    try:
        return Policy(PolicyFile.model_validate(raw), str(path))
    except ValidationError as exc:
        raise ConfigurationError([_problem(error, raw, source) for error in exc.errors()]) from None


_ID_HELP = "a unique name for the rule: letters, digits, '.', '_' or '-', e.g. no-critical-fixable"
_REQUIRED = {
    ("missing", "id"): f"is required: {_ID_HELP}",
    ("string_pattern_mismatch", "id"): f"must be {_ID_HELP}",
    ("missing", "action"): "is required: approve, reject or review",
}


def _allowed(model: type[BaseModel]) -> str:
    return ", ".join(info.alias or name for name, info in model.model_fields.items())


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose keys ``loc``'s last part was checked against."""
    parents = [part for part in loc[:-1] if isinstance(part, str)]
    last = parents[-1] if parents else None
    return {"severity": SeverityCounts, "licenses": LicenseCounts, "allow": PolicyCve, "cves": PolicyCve,
            "revocation": RevocationPolicy, "conditions": GraceCondition, "approvers": ApproverEntry}.get(
        last or "", Rule if parents == ["rules"] else PolicyFile
    )


def _problem(error: Any, raw: dict[str, Any], source: str) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        error = {**error, "msg": f"unknown field; allowed: {_allowed(_model_at(loc))}"}
    elif (said := _REQUIRED.get((error["type"], str(loc[-1])))) is not None:
        error = {**error, "msg": said}
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules") or []
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        name = rule.get("id") if isinstance(rule, dict) and isinstance(rule.get("id"), str) else None
        label = f"rule {name!r} (rules[{loc[1]}])" if name else f"rules[{loc[1]}]"
        error = {**error, "loc": (label, *loc[2:])}
    return file_problem(error, source)
