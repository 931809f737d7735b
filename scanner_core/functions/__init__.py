"""The Azure Functions side: app and host settings, the function bodies, the
HTTP API, and one Blueprint per concern (registered by ``function_app.py``).

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "admission_provider": ".admission_api",
    "admission_review": ".admission_api",
    "serve_admission": ".admission_api",
    "all_blueprints": ".blueprints",
    "approval_security": ".approvals_api",
    "approve": ".approvals_api",
    "get_approval": ".approvals_api",
    "list_approvals": ".approvals_api",
    "on_digest": ".approvals_api",
    "on_deadlines": ".approvals_api",
    "reject": ".approvals_api",
    "revoke": ".approvals_api",
    "extend": ".approvals_api",
    "APP_ROOT": ".host",
    "max_dequeue_count": ".host",
    "message_encoding": ".host",
    "ApiContext": ".http_api",
    "get_audit": ".http_api",
    "request_scan": ".http_api",
    "request_scan_by_path": ".http_api",
    "security_summary": ".http_api",
    "serve": ".http_api",
    "dashboard": ".image_api",
    "fleet_images": ".fleet_api",
    "image_history": ".image_api",
    "image_verdict": ".image_api",
    "package_images": ".fleet_query_api",
    "vulnerability_images": ".fleet_query_api",
    "metrics": ".metrics_api",
    "evaluate_policy": ".policy_api",
    "on_rescan": ".monitor_handlers",
    "on_watch": ".monitor_handlers",
    "load_function_settings": ".settings",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
