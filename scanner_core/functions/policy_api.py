"""``POST /api/policy/evaluate``: the policy's dry run, for people editing rules.

Body ``{"audit-id": "..."}``. The current policy (``POLICY_PATH``, or the
built-in default) is evaluated against that audit's ``meta`` and stored
``scan-result.json``, and against the exploitability feeds as they are now;
nothing is written. The answer is the decision the policy would take now,
each rule's match or no-match with its sentence (every rule, also those after
the first match), and the decision the audit recorded when it was scanned.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from ..models import AuditMeta, AuditResult
from ..storage import validate_audit_id
from .http_api import ApiContext
from .responses import ApiError, answer, json_object, json_response, string_field

EVALUATE_FIELDS = ("audit-id",)


def evaluate_policy(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST policy/evaluate``."""

    def run() -> func.HttpResponse:
        from ..exploits import exploit_lookup
        from ..policy import facts_from_audit, load_policy

        body = json_object(req.get_body(), EVALUATE_FIELDS, '{"audit-id": "<the id of a recorded audit>"}')
        if "audit-id" not in body:
            raise ApiError(400, "missing-field", "is required: the id of a recorded audit", "audit-id")
        audit_id = validate_audit_id(string_field(body, "audit-id"), field="audit-id", recorded=True)
        with ctx.audit_index() as index:
            data = index.read_meta(audit_id)
            if data is None:
                raise ApiError(404, "not-found", f"no audit {audit_id!r} has been recorded", "audit-id")
            meta = AuditMeta.model_validate_json(data)
            if meta.audit_result is not AuditResult.SUCCEEDED:
                raise ApiError(409, "audit-not-succeeded", (
                    f"audit {audit_id!r} did not succeed ({meta.failure_reason or meta.audit_result.value}): "
                    "there are no findings to judge"), "audit-id")  # fmt: skip
            report = index.read(meta.trivy_audit_path) if meta.trivy_audit_path else None
        policy = ctx.config.policy or load_policy(ctx.config.settings)
        facts = facts_from_audit(meta, report, exploits=exploit_lookup(ctx.config.settings))
        decision, explained = policy.explain(facts)
        document: dict[str, Any] = {
            "audit-id": audit_id,
            "policy": policy.source,
            "decision": decision.model_dump(),
            "rules": [rule.document() for rule in explained],
            "recorded": meta.policy.model_dump() if meta.policy else None,
            "report-read": report is not None,
        }
        return json_response(200, document)

    return answer(req, ("POST",), run)
