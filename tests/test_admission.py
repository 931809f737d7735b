"""Issue 25, items 2 and 3: admission requests built from real manifests by the double of the
API server and Gatekeeper (tests/support/admission.py), answered in-process by the routes'
handlers against Azurite, a real registry (with its access log, to count manifest requests)
and real trivy scans; the client-certificate check with certificates made here."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scanner_core.admission import AdmissionSettings, ClientCertificateRefused, check_client_certificate, decide, outcome_of
from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import admission_provider, admission_review, image_verdict
from tests.support.admission import (
    admission_review as review_of,
    body,
    cronjob_manifest,
    deployment_manifest,
    pod_manifest,
    provider_request,
)
from tests.support.images import SAMPLE_PACKAGES, build_alpine_image
from tests.support.registry import Registry
from tests.test_http_api import answer, error_of, http, make_api, queued, scan_request_of
from tests.test_telemetry import exported  # noqa: F401 - the fixture

POLICY = "default: approve\nrules:\n  - {id: no-critical, action: reject, severity: {critical: '> 0'}}\n"


@pytest.fixture(scope="module")
def logged_registry(tmp_path_factory):
    with Registry(tmp_path_factory.mktemp("admission-registry"), access_log=True) as running:
        yield running


@pytest.fixture(scope="module")
def images(logged_registry, tmp_path_factory):
    """``clean`` (no critical finding), ``critical`` (busybox's CVE-2099-0001) and ``unscanned``: pushed."""
    where = tmp_path_factory.mktemp("admission-images")
    clean = tuple(p for p in SAMPLE_PACKAGES if p.name != "busybox")
    built = {"clean": build_alpine_image(where / "clean.tar", clean),
             "critical": build_alpine_image(where / "critical.tar", SAMPLE_PACKAGES),
             "unscanned": build_alpine_image(where / "unscanned.tar", clean[:1])}
    found = {}
    for name, tarball in built.items():
        digest = logged_registry.push_docker_archive(tarball.path, f"gate/{name}", "1.0")
        found[name] = (f"{logged_registry.address}/gate/{name}:1.0", digest)
    return found


@pytest.fixture
def env(scanner_env, logged_registry, tmp_path):
    scanner_env.write_config({"registries": [{"address": logged_registry.address, "username": logged_registry.username,
                                              "password": logged_registry.password, "insecure": True}]})
    (policy := tmp_path / "policy.yaml").write_text(POLICY)
    # Verdicts uncached: each step below must see the one before it at once.
    scanner_env.set(POLICY_PATH=str(policy), ADMISSION_EXEMPT_NAMESPACES="kube-system", ADMISSION_VERDICT_TTL_SECONDS="0")
    return scanner_env


def scan(image: str, audit_id: str, trigger: str = "request") -> None:
    request = ScanRequest(audit_id=audit_id, requested_at=datetime.now(timezone.utc), image=image, trigger=trigger)
    outcome = Scanner(load_config()).scan(request)
    assert outcome.succeeded, outcome.meta.failure_description


def review(api, document, **headers: str):
    request = http("POST", "admission/review", body=body(document))
    if headers:
        request = type(request)(method="POST", url=request.url, headers=headers, body=body(document))
    response = admission_review(request, api)
    return response.status_code, answer(response, response.status_code)


def by_digest(reference: str, digest: str) -> str:
    return f"{reference.rsplit(':', 1)[0]}@{digest}"


def test_approved_images_are_allowed_and_a_refused_one_is_named_with_why(env, azurite, images, exported):
    api = make_api(azurite)
    (clean, clean_digest), (critical, critical_digest) = images["clean"], images["critical"]
    scan(by_digest(clean, clean_digest), "adm-clean")
    scan(by_digest(critical, critical_digest), "adm-critical")

    # A Pod of the approved image (by tag: resolved to its digest): allowed, the uid echoed.
    document = review_of(pod_manifest([clean]), uid="uid-pod-1")
    status, answered = review(api, document)
    assert status == 200 and answered["apiVersion"] == "admission.k8s.io/v1" and answered["kind"] == "AdmissionReview"
    assert answered["response"] == {"uid": "uid-pod-1", "allowed": True}

    # A Deployment whose init container runs the auto-rejected image: denied, the image and why named.
    _, answered = review(api, review_of(deployment_manifest([clean], init=[by_digest(critical, critical_digest)])))
    response = answered["response"]
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert by_digest(critical, critical_digest) in response["status"]["message"]
    assert "auto-rejected" in response["status"]["message"] and "critical" in response["status"]["message"]

    # A CronJob with init and ephemeral containers: every list counts (the ephemeral one is refused).
    _, answered = review(api, review_of(cronjob_manifest([clean], init=[clean], ephemeral=[critical])))
    assert answered["response"]["allowed"] is False and critical in answered["response"]["status"]["message"]

    # warn: allowed with the refusal as a warning; audit: allowed, annotated; an exempt namespace: not looked at.
    env.set(ADMISSION_MODE="warn")
    _, answered = review(api, review_of(pod_manifest([critical])))
    assert answered["response"]["allowed"] is True and critical in answered["response"]["warnings"][0]
    env.set(ADMISSION_MODE="audit")
    _, answered = review(api, review_of(pod_manifest([critical])))
    assert answered["response"]["allowed"] is True and "warnings" not in answered["response"]
    assert critical in answered["response"]["auditAnnotations"]["refused-images"]
    env.set(ADMISSION_MODE="enforce")
    _, answered = review(api, review_of(pod_manifest([critical]), namespace="kube-system"))
    assert answered["response"]["allowed"] is True
    counted = {(p.attributes["decision"], p.attributes["mode"]): p.value
               for p in exported.points("trivy_scanner_admission_decisions")}  # each review by its decision
    assert counted == {("allowed", "enforce"): 1, ("denied", "enforce"): 2, ("warned", "warn"): 1,
                       ("audit-refused", "audit"): 1, ("exempt", "enforce"): 1}, counted

    # Gatekeeper: one item per key, the verdict document as its value, an error for a bad key.
    response = admission_provider(http("POST", "admission/provider", body=body(provider_request(
        [clean, by_digest(critical, critical_digest), "UPPER/Case:bad"]))), api)
    provider = answer(response, 200)
    assert provider["apiVersion"] == "externaldata.gatekeeper.sh/v1beta1" and provider["kind"] == "ProviderResponse"
    assert provider["response"]["idempotent"] is True and provider["response"]["systemError"] == ""
    first, second, third = provider["response"]["items"]
    assert (first["key"], first["value"]["allowed"], first["value"]["digest"]) == (clean, True, clean_digest)
    assert second["value"]["allowed"] is False and second["value"]["approval"]["state"] == "auto-rejected"
    assert third["key"] == "UPPER/Case:bad" and "not an image reference" in third["error"]
    assert queued(api) == []  # nothing was unknown


def test_an_at_risk_approval_allows_with_a_warning_naming_the_deadline():
    """The at-risk contract (issue 25, item 1: ``approval.state`` and ``deadline``), at the unit level."""
    verdict = {"allowed": True, "approval": {"state": "at-risk", "deadline": "2026-12-11T00:00:00Z"}}
    decision = decide([outcome_of("reg.example/team/app:1.0", "sha256:" + "a" * 64, verdict)], "enforce", "deny")
    assert decision.allowed is True
    assert decision.warnings == ["reg.example/team/app:1.0: approval at risk, revoked at 2026-12-11T00:00:00Z "
                                 "unless re-approved"]


def test_an_unscanned_digest_is_denied_and_queued_once_under_20_reviews(env, azurite, images, exported):
    api = make_api(azurite)
    reference, digest = images["unscanned"]
    pinned = by_digest(reference, digest)

    # dryRun: denied, nothing queued.
    _, answered = review(api, review_of(pod_manifest([pinned]), dry_run=True))
    assert answered["response"]["allowed"] is False and "never been scanned" in answered["response"]["status"]["message"]
    assert queued(api) == []

    documents = [review_of(pod_manifest([pinned]), uid=f"uid-{n}") for n in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda d: review(api, d)[1]["response"], documents))
    assert [a["uid"] for a in answers] == [f"uid-{n}" for n in range(20)]
    assert all(a["allowed"] is False and pinned in a["status"]["message"] for a in answers)
    assert all("a scan was queued" in a["status"]["message"] for a in answers), answers[0]
    (message,) = queued(api)
    request = scan_request_of(message)
    assert (request.image, request.trigger) == (pinned, "admission")

    # /verdict?enqueue=true: the same ledger, so nothing more is queued in this window.
    name = quote(reference.rsplit(":", 1)[0], safe="")
    error = error_of(image_verdict(http("GET", "v", route_params={"name": name},
                                        params={"digest": digest, "enqueue": "true"}), api), 404)
    assert request.audit_id in error["message"] and queued(api) == []

    # The queued scan runs (trigger admission: its approval request is decided by the policy): the next try is allowed.
    scan(request.image, request.audit_id, trigger="admission")
    _, answered = review(api, review_of(pod_manifest([pinned])))
    assert answered["response"]["allowed"] is True, answered
    counted = {(p.attributes["decision"], p.attributes["unscanned"]): p.value
               for p in exported.points("trivy_scanner_admission_decisions")}
    assert counted == {("denied", "true"): 21, ("allowed", "false"): 1}, counted


def test_a_tag_is_resolved_to_its_digest_once_within_the_ttl(env, azurite, images, logged_registry):
    api = make_api(azurite)
    reference, _ = images["clean"]
    env.set(ADMISSION_TAG_TTL_SECONDS="2")
    needle = '"HEAD /v2/gate/clean/manifests/1.0 '

    def tag_requests() -> int:
        lines = logged_registry.log_path.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if needle in line and '" 200 ' in line)  # a 401 first, then 200

    before = tag_requests()
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda _: review(api, review_of(pod_manifest([reference]))), range(5)))
    review(api, review_of(deployment_manifest([reference, reference])))
    assert tag_requests() - before == 1
    time.sleep(2.1)
    review(api, review_of(pod_manifest([reference])))
    assert tag_requests() - before == 2  # the TTL passed: asked again


def _certificate(subject: str, issuer_key=None, issuer_name: str | None = None, days: int = 30):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]) if issuer_name else name
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
               .not_valid_after(now + timedelta(days=days)))
    if issuer_name is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return certificate, key


def _header(certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def test_the_client_certificate_check_accepts_the_configured_one_and_refuses_another(env, azurite, images):
    gatekeeper, _ = _certificate("gatekeeper")
    stranger, _ = _certificate("gatekeeper")  # same name, other key
    thumbprint = gatekeeper.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - App Service's thumbprint
    by_thumbprint = AdmissionSettings(ADMISSION_CLIENT_CERT_THUMBPRINTS=thumbprint)
    assert check_client_certificate(_header(gatekeeper), by_thumbprint) == "CN=gatekeeper"
    with pytest.raises(ClientCertificateRefused) as refused:
        check_client_certificate(_header(stranger), by_thumbprint)
    assert refused.value.status == 403

    authority, authority_key = _certificate("cluster-ca")
    issued, _ = _certificate("apiserver", authority_key, "cluster-ca")
    other_authority, other_key = _certificate("cluster-ca")
    forged, _ = _certificate("apiserver", other_key, "cluster-ca")
    by_ca = AdmissionSettings(ADMISSION_CLIENT_CA=authority.public_bytes(serialization.Encoding.PEM).decode())
    assert check_client_certificate(_header(issued), by_ca) == "CN=apiserver"
    for header, status in ((_header(forged), 403), ("bm90IGEgY2VydA==", 403), (None, 401)):
        with pytest.raises(ClientCertificateRefused) as refused:
            check_client_certificate(header, by_ca)
        assert refused.value.status == status
    expired = check_client_certificate
    with pytest.raises(ClientCertificateRefused, match="validity"):
        expired(_header(issued), by_ca, now=datetime.now(timezone.utc) + timedelta(days=31))

    # Through the route: the configured certificate is answered, another is a 403 before anything is looked up.
    api = make_api(azurite)
    env.set(ADMISSION_AUTH="client-certificate", ADMISSION_CLIENT_CERT_THUMBPRINTS=thumbprint)
    unscanned = by_digest(*images["unscanned"])
    status, answered = review(api, review_of(pod_manifest([unscanned]), dry_run=True),
                              **{"X-ARR-ClientCert": _header(gatekeeper)})
    assert status == 200 and answered["response"]["allowed"] is False
    status, answered = review(api, review_of(pod_manifest([unscanned])), **{"X-ARR-ClientCert": _header(stranger)})
    assert status == 403 and answered["error"]["field"] == "X-ARR-ClientCert"
    status, answered = review(api, review_of(pod_manifest([unscanned])))
    assert status == 401 and answered["error"]["code"] == "unauthenticated"
    assert queued(api) == []


@pytest.mark.parametrize(("document", "status", "field", "says"), [
    (b"{" + b" " * (3 * 1024 * 1024) + b"}", 413, None, "at most"),
    (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None, "nested"),
    (b"[" * 100_000, 400, None, "nested too deeply"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "ConfigMap", "request": {}}, 400, "kind", "AdmissionReview"),
    ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, 400, "apiVersion",
     "admission.k8s.io/v1"),
    ("no-uid", 400, "request.uid", "required"),
    ("secret", 400, "request.kind.kind", "Pod, Deployment"),
    ("no-spec", 400, "request.object.spec.template.spec", "pod spec"),
    ("bad-image", 400, "request.object.spec.containers[0].image", "image reference"),
])
def test_hostile_bodies_get_a_clear_error_and_no_scan(env, azurite, images, document, status, field, says):
    api = make_api(azurite)
    unscanned = by_digest(*images["unscanned"])
    if document == "no-uid":
        document = review_of(pod_manifest([unscanned]))
        del document["request"]["uid"]
    elif document == "secret":
        document = review_of(pod_manifest([unscanned]))
        document["request"]["kind"]["kind"] = "Secret"
    elif document == "no-spec":
        document = review_of(deployment_manifest([unscanned]))
        del document["request"]["object"]["spec"]["template"]
    elif document == "bad-image":
        document = review_of(pod_manifest([unscanned]))
        document["request"]["object"]["spec"]["containers"][0]["image"] = {"nested": True}
    data = document if isinstance(document, bytes) else body(document)
    error = error_of(admission_review(http("POST", "admission/review", body=data), api), status)
    assert error["field"] == field and says in error["message"], error
    assert queued(api) == []
    assert error_of(admission_provider(http("POST", "admission/provider", body=b"[]"), api), 400)["code"] == \
        "invalid-admission-request"


def test_the_gatekeeper_and_kyverno_examples_name_the_routes_and_each_other():
    """deploy/: the Constraint is of the template's kind, the template asks the Provider by its name,
    and both point at the provider route (what a typo would break silently in a cluster)."""
    import yaml

    from tests.conftest import REPO_ROOT

    deploy = REPO_ROOT / "deploy"
    provider = yaml.safe_load((deploy / "gatekeeper" / "provider.yaml").read_text())
    template = yaml.safe_load((deploy / "gatekeeper" / "constrainttemplate.yaml").read_text())
    constraint = yaml.safe_load((deploy / "gatekeeper" / "constraint.yaml").read_text())
    policy = yaml.safe_load((deploy / "kyverno" / "clusterpolicy.yaml").read_text())
    assert provider["spec"]["url"].endswith("/api/admission/provider") and provider["spec"]["timeout"] <= 3
    assert constraint["kind"] == template["spec"]["crd"]["spec"]["names"]["kind"]
    assert f'"provider": "{provider["metadata"]["name"]}"' in template["spec"]["targets"][0]["rego"]
    call = policy["spec"]["rules"][0]["validate"]["foreach"][0]["context"][0]["apiCall"]
    assert call["service"]["url"].endswith("/api/admission/provider")
    assert {d["key"]: d["value"] for d in call["data"]}["kind"] == "ProviderRequest"


def test_admission_auth_sets_the_routes_auth_level_when_indexed(monkeypatch):
    """``client-certificate``: anonymous to the host (the app checks the certificate); else the function key."""
    import importlib

    import azure.functions as func

    from scanner_core.functions import admission_routes

    try:
        monkeypatch.setenv("ADMISSION_AUTH", "client-certificate")
        assert importlib.reload(admission_routes).AUTH_LEVEL == func.AuthLevel.ANONYMOUS
        monkeypatch.setenv("ADMISSION_AUTH", "function-key")
        assert importlib.reload(admission_routes).AUTH_LEVEL == func.AuthLevel.FUNCTION
    finally:
        monkeypatch.delenv("ADMISSION_AUTH")
        importlib.reload(admission_routes)


def test_unscanned_images_are_rate_limited_per_namespace(env, azurite, images):
    """ADMISSION_UNSCANNED=warn: allowed, with one warning per unscanned image saying what was queued."""
    api = make_api(azurite)
    env.set(ADMISSION_ENQUEUE_PER_NAMESPACE="1", ADMISSION_UNSCANNED="warn")
    first, second = by_digest(*images["clean"]), by_digest(*images["critical"])  # unscanned for this scanner
    _, answered = review(api, review_of(pod_manifest([first, second]), namespace="team-a"))
    assert answered["response"]["allowed"] is True and "status" not in answered["response"]
    (taken,) = queued(api)  # team-a's one scan this minute: either image (they are looked up side by side)
    other = second if scan_request_of(taken).image == first else first
    assert f"image {other} has never been scanned; no scan was queued: namespace 'team-a' queued its 1 a minute " \
           "(ADMISSION_ENQUEUE_PER_NAMESPACE); retry later" in answered["response"]["warnings"]
    _, answered = review(api, review_of(pod_manifest([other]), namespace="team-b"))
    assert "a scan was queued" in answered["response"]["warnings"][0]
    assert [scan_request_of(m).image for m in queued(api)] == [other]  # the first was received above


def test_a_failed_scan_refuses_naming_its_reason():
    verdict = {"allowed": False, "audit-result": "failed", "failure-reason": "image-not-found", "approval": None}
    decision = decide([outcome_of("reg.example/team/app:2.0", None, verdict)], "enforce", "deny")
    assert decision.allowed is False
    assert decision.message == "image reg.example/team/app:2.0 is not allowed: its latest scan failed (image-not-found)"


def test_a_bad_admission_setting_is_a_500_naming_it_and_no_scan(env, azurite, images):
    api = make_api(azurite)
    env.set(ADMISSION_MODE="block")
    error = error_of(admission_review(http("POST", "admission/review", body=body(review_of(pod_manifest(
        [by_digest(*images["unscanned"])])))), api), 500)
    assert error["code"] == "configuration-error" and "ADMISSION_MODE" in error["message"]
    assert queued(api) == []
