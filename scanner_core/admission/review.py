"""What a cluster sends, parsed with pydantic: Kubernetes' ``AdmissionReview``
(admission.k8s.io/v1, https://kubernetes.io/docs/reference/config-api/apiserver-admission.v1/)
for a Pod or a workload's pod template, and Gatekeeper's external data ``ProviderRequest``
(externaldata.gatekeeper.sh/v1beta1,
https://open-policy-agent.github.io/gatekeeper/website/docs/externaldata). A body that is
too large, too deep, of another kind or without a ``uid`` is an ``AdmissionBodyError``
naming the field and what is allowed: it is answered before any lookup, so nothing is queued.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ADMISSION_API_VERSION = "admission.k8s.io/v1"
PROVIDER_API_VERSION = "externaldata.gatekeeper.sh/v1beta1"
MAX_BODY_BYTES = 3 * 1024 * 1024  # an object is at most 1.5 MiB in etcd; a review may carry it and oldObject
MAX_DEPTH = 64  # a Pod is about 12 levels deep; a deeper body is not a Kubernetes object
MAX_IMAGES = 256
MAX_KEYS = 1000
MAX_IMAGE_CHARS = 1024
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
# Where each kind keeps its pod spec (the kinds of the API groups "" and apps/batch, v1).
WORKLOAD_KINDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


class AdmissionBodyError(ValueError):
    """A body the endpoint cannot answer: ``status`` (400, 413), ``field``, ``message``."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


class GroupVersionKind(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    group: str = ""
    version: str = Field(max_length=64)
    kind: str = Field(max_length=128)


class AdmissionRequest(BaseModel):
    """The fields of ``AdmissionRequest`` this endpoint reads; the rest (userInfo, options...) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    uid: str = Field(min_length=1, max_length=128)
    kind: GroupVersionKind
    namespace: str | None = Field(None, max_length=253)
    name: str | None = Field(None, max_length=253)
    operation: str = Field("CREATE", max_length=16)
    object: dict[str, Any] | None = None
    dry_run: bool = Field(False, alias="dryRun")


class AdmissionReview(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class ProviderKeys(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    keys: list[Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]] = Field(max_length=MAX_KEYS)


class ProviderRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    api_version: Literal["externaldata.gatekeeper.sh/v1beta1"] = Field(alias="apiVersion")
    kind: Literal["ProviderRequest"]
    request: ProviderKeys


@dataclass(frozen=True)
class ContainerImage:
    """One image a pod would run: the container's list and name, and the reference as written."""

    field: str  # initContainers, containers, ephemeralContainers
    container: str
    image: str


def parse_admission_review(body: bytes) -> tuple[AdmissionReview, list[ContainerImage]]:
    """The review and the images of its object, in the pod's order (init containers first)."""
    document = _document(body, "AdmissionReview", '{"apiVersion": "admission.k8s.io/v1", "kind": '
                         '"AdmissionReview", "request": {"uid": "...", "kind": {...}, "object": {...}}}')
    review = _validated(AdmissionReview, document, ADMISSION_API_VERSION, "AdmissionReview")
    request = review.request
    path = WORKLOAD_KINDS.get(request.kind.kind)
    if path is None:
        raise AdmissionBodyError(400, "request.kind.kind", f"{request.kind.kind[:128]!r} is not allowed: one of "
                                 f"{', '.join(WORKLOAD_KINDS)} (register the webhook for these resources only)")
    if request.object is None:
        if request.operation in ("DELETE", "CONNECT"):
            return review, []  # nothing will run
        raise AdmissionBodyError(400, "request.object", f"is required for {request.operation}: the {request.kind.kind}")
    return review, list(_images(request.object, path, request.kind.kind))


def parse_provider_request(body: bytes) -> ProviderRequest:
    document = _document(body, "ProviderRequest", '{"apiVersion": "externaldata.gatekeeper.sh/v1beta1", '
                         '"kind": "ProviderRequest", "request": {"keys": ["registry.example.com/team/app:1.0"]}}')
    return _validated(ProviderRequest, document, PROVIDER_API_VERSION, "ProviderRequest")


# -- the parts ---------------------------------------------------------------


def _document(body: bytes, what: str, example: str) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise AdmissionBodyError(413, None, f"the body is {len(body)} bytes: an {what} is at most {MAX_BODY_BYTES}")
    if not body.strip():
        raise AdmissionBodyError(400, None, f"the body is empty; expected {example}")
    try:
        document = json.loads(body)
    except RecursionError:
        raise AdmissionBodyError(400, None, f"the body is nested too deeply to be an {what}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise AdmissionBodyError(400, None, f"the body is not valid JSON ({str(error)[:200]}); expected {example}") from None
    if not isinstance(document, dict):
        raise AdmissionBodyError(400, None, f"the body must be a JSON object, got {type(document).__name__}; "
                                 f"expected {example}")
    _check_depth(document)
    return document


def _check_depth(document: Any) -> None:
    """Walks the parsed body without recursion: a body nested deeper than any Kubernetes
    object is refused before a model (or a later reader) recurses into it."""
    level: list[tuple[Any, int]] = [(document, 1)]
    while level:
        node, depth = level.pop()
        if depth > MAX_DEPTH:
            raise AdmissionBodyError(400, None, f"the body is nested more than {MAX_DEPTH} levels deep: "
                                     "not a Kubernetes object")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        level.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _validated(model: type[Any], document: dict[str, Any], api_version: str, kind: str) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        if field == "apiVersion":
            message = f"must be {api_version!r}"
        elif field == "kind":
            message = f"must be {kind!r}"
        elif first["type"] == "missing":
            message = "is required"
        else:
            message = first["msg"]
        raise AdmissionBodyError(400, field, message) from None


def _images(obj: dict[str, Any], path: tuple[str, ...], kind: str) -> Iterator[ContainerImage]:
    spec: Any = obj
    for step in path:
        spec = spec.get(step) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        where = "request.object." + ".".join(path)
        raise AdmissionBodyError(400, where, f"is required: a {kind}'s pod spec")
    count = 0
    for field in CONTAINER_FIELDS:
        containers = spec.get(field) or []
        if not isinstance(containers, list):
            raise AdmissionBodyError(400, f"request.object.{'.'.join(path)}.{field}", "must be a list of containers")
        for index, container in enumerate(containers):
            image = container.get("image") if isinstance(container, dict) else None
            if not isinstance(image, str) or not image or len(image) > MAX_IMAGE_CHARS:
                raise AdmissionBodyError(400, f"request.object.{'.'.join(path)}.{field}[{index}].image",
                                         f"must be an image reference of 1 to {MAX_IMAGE_CHARS} characters")
            count += 1
            if count > MAX_IMAGES:
                raise AdmissionBodyError(400, f"request.object.{'.'.join(path)}",
                                         f"has more than {MAX_IMAGES} containers")
            yield ContainerImage(field, str(container.get("name") or "")[:253], image)
