"""The registry API client against the real private registry (htpasswd auth)."""

from __future__ import annotations

import pytest

from scanner_core.errors import FailureKind
from scanner_core.registry import Credentials, RegistryApi, RegistryApiError
from tests.conftest import SAMPLE_REPOSITORY, SAMPLE_TAG, PushedImage
from tests.support.images import ImageTarball
from tests.support.registry import Registry, unreachable_address


def api_for(registry: Registry, password: str | None = None) -> RegistryApi:
    credentials = Credentials(registry.address, registry.username, password or registry.password)
    return RegistryApi(registry.address, credentials=credentials, insecure=True)


def test_manifest_digest_and_size_match_what_was_pushed(registry: Registry, pushed_sample: PushedImage) -> None:
    with api_for(registry) as api:
        manifest = api.manifest(SAMPLE_REPOSITORY, SAMPLE_TAG)
    assert manifest.digest == pushed_sample.digest
    assert not manifest.is_index
    layers = manifest.document["layers"]
    assert manifest.compressed_size == sum(layer["size"] for layer in layers) + manifest.document["config"]["size"]
    assert manifest.compressed_size > 0


def test_tags_follow_the_link_header_across_pages(registry: Registry, sample_image: ImageTarball) -> None:
    for tag in ("1.0", "1.1", "2.0"):
        registry.push_docker_archive(sample_image.path, "paged/app", tag)
    with api_for(registry) as api:
        assert sorted(api.tags("paged/app", page_size=1)) == ["1.0", "1.1", "2.0"]
        assert sorted(api.tags("paged/app")) == ["1.0", "1.1", "2.0"]


def test_a_wrong_password_is_a_permanent_unauthorized_that_does_not_quote_it(
    registry: Registry, pushed_sample: PushedImage
) -> None:
    with api_for(registry, password="not-the-password-42") as api, pytest.raises(RegistryApiError) as caught:
        api.manifest(SAMPLE_REPOSITORY, SAMPLE_TAG)
    assert (caught.value.kind, caught.value.reason) == (FailureKind.PERMANENT, "unauthorized")
    assert "not-the-password-42" not in str(caught.value)


def test_an_unknown_tag_is_not_found(registry: Registry, pushed_sample: PushedImage) -> None:
    with api_for(registry) as api, pytest.raises(RegistryApiError) as caught:
        api.manifest(SAMPLE_REPOSITORY, "no-such-tag")
    assert (caught.value.kind, caught.value.reason) == (FailureKind.PERMANENT, "not-found")


def test_an_unreachable_registry_is_transient() -> None:
    address = unreachable_address()
    with RegistryApi(address, insecure=True, timeout=5) as api, pytest.raises(RegistryApiError) as caught:
        api.manifest("team/app", "1.0")
    assert (caught.value.kind, caught.value.reason) == (FailureKind.TRANSIENT, "registry-unreachable")


def test_a_manifest_larger_than_the_spec_allows_is_refused_unread() -> None:
    """Issue 23: a hostile registry's endless manifest must not fill the instance's memory."""
    from http.server import BaseHTTPRequestHandler

    from scanner_core.registry.api import MAX_MANIFEST_BYTES
    from tests.support.loopback_http import LoopbackHttpServer

    sent: list[int] = []

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.end_headers()
            block = b" " * 65536
            try:
                for _ in range(2 * MAX_MANIFEST_BYTES // len(block)):
                    self.wfile.write(block)
                    sent.append(len(block))
            except OSError:
                pass  # the client stopped reading

        def log_message(self, *args: object) -> None:
            return

    class Server(LoopbackHttpServer):
        def __init__(self) -> None:
            self._serve(Endless, "endless-manifest")

    with Server() as server, RegistryApi(server.base_url.removeprefix("http://"), plain_http=True, timeout=5) as api:
        with pytest.raises(RegistryApiError) as caught:
            api.manifest("hostile/app", "1.0")
    assert caught.value.reason == "invalid-image" and "larger than" in str(caught.value)
