"""A double of the callers of the admission routes: the Kubernetes API server's admission
webhook call and Gatekeeper's external data call (neither can run here).

It builds what they send from real manifests, in the documented shapes:
- ``AdmissionReview`` admission.k8s.io/v1 (request: ``uid``, ``kind`` as a GroupVersionKind,
  ``resource``, ``namespace``, ``operation``, ``userInfo``, ``object``, ``oldObject``, ``dryRun``,
  ``options``), as the API server posts it to a ``ValidatingWebhookConfiguration``'s URL:
  https://kubernetes.io/docs/reference/config-api/apiserver-admission.v1/ and
  https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#request;
- ``ProviderRequest`` externaldata.gatekeeper.sh/v1beta1 (``request.keys``), as Gatekeeper posts
  it to a ``Provider``'s URL: https://open-policy-agent.github.io/gatekeeper/website/docs/externaldata
  ("Providers", "ProviderRequest" and "ProviderResponse").
The manifests are the YAML a user applies (Pod, Deployment, CronJob with init and ephemeral
containers); the double wraps them as the API server does (``kind`` and ``resource`` from the
object's apiVersion and kind).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import yaml

RESOURCES = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
             "CronJob": ("batch", "v1", "cronjobs"), "StatefulSet": ("apps", "v1", "statefulsets"),
             "Job": ("batch", "v1", "jobs"), "DaemonSet": ("apps", "v1", "daemonsets")}


def pod_manifest(images: list[str], *, init: list[str] = (), ephemeral: list[str] = (), name: str = "web") -> str:
    containers = "\n".join(f"  - name: c{i}\n    image: {image}" for i, image in enumerate(images))
    inits = "\n".join(f"  - name: init{i}\n    image: {image}" for i, image in enumerate(init))
    debug = "\n".join(f"  - name: debug{i}\n    image: {image}\n    targetContainerName: c0"
                      for i, image in enumerate(ephemeral))
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n"
            + (f"  initContainers:\n{inits}\n" if init else "")
            + f"  containers:\n{containers}\n"
            + (f"  ephemeralContainers:\n{debug}\n" if ephemeral else ""))


def deployment_manifest(images: list[str], *, init: list[str] = ()) -> str:
    pod = yaml.safe_load(pod_manifest(images, init=init))
    return yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                    "template": {"metadata": pod["metadata"], "spec": pod["spec"]}}})


def cronjob_manifest(images: list[str], *, init: list[str] = (), ephemeral: list[str] = ()) -> str:
    pod = yaml.safe_load(pod_manifest(images, init=init, ephemeral=ephemeral))
    pod["spec"]["restartPolicy"] = "OnFailure"
    return yaml.safe_dump({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
                           "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
                               "metadata": pod["metadata"], "spec": pod["spec"]}}}}})


def admission_review(manifest: str, *, namespace: str = "shop", dry_run: bool = False,
                     operation: str = "CREATE", uid: str | None = None) -> dict[str, Any]:
    """The ``AdmissionReview`` the API server sends for ``manifest``."""
    obj = yaml.safe_load(manifest)
    group, version, resource = RESOURCES[obj["kind"]]
    kind = {"group": group, "version": version, "kind": obj["kind"]}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": kind, "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": kind, "requestResource": {"group": group, "version": version, "resource": resource},
            "name": obj["metadata"]["name"], "namespace": namespace, "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": str(uuid.uuid4()), "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": obj | {"metadata": obj["metadata"] | {"namespace": namespace}},
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def provider_request(keys: list[str]) -> dict[str, Any]:
    """The ``ProviderRequest`` Gatekeeper sends for ``external_data({"provider": ..., "keys": keys})``."""
    return {"apiVersion": "externaldata.gatekeeper.sh/v1beta1", "kind": "ProviderRequest",
            "request": {"keys": keys}}


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()
