"""Image references: normalisation, validation, and picking credentials."""

from __future__ import annotations

import pytest

from scanner_core.errors import InvalidImageReference
from scanner_core.registry import RegistryCredentials, find_credentials, parse_image_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", None, None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
        ("docker.io/library/alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("index.docker.io/library/alpine", "docker.io", "library/alpine", None, None),
        ("localhost:5000/team/app:1.0", "localhost:5000", "team/app", "1.0", None),
        ("localhost/app", "localhost", "app", None, None),
        ("127.0.0.1:5000/app:latest", "127.0.0.1:5000", "app", "latest", None),
        ("myacr.azurecr.io/team/sub/app:v1.2.3-rc.1", "myacr.azurecr.io", "team/sub/app", "v1.2.3-rc.1", None),
        (f"ghcr.io/org/app@{DIGEST}", "ghcr.io", "org/app", None, DIGEST),
        (f"ghcr.io/org/app:1.0@{DIGEST}", "ghcr.io", "org/app", "1.0", DIGEST),
        ("Registry.Example.com:443/a_b/c__d/e-f.g:T_1", "registry.example.com:443", "a_b/c__d/e-f.g", "T_1", None),
    ],
)
def test_valid_references_are_normalised(text, registry, repository, tag, digest):
    reference = parse_image_reference(text)
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    # The canonical form parses back to the same reference.
    assert parse_image_reference(reference.canonical) == reference


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "required"),
        ("--help", "must not start with '-'"),
        ("-alpine", "must not start with '-'"),
        ("alpine 3.19", "white space"),
        ("Alpine:3.19", "invalid repository name"),
        ("alpine:", "invalid tag"),
        ("alpine:-x", "invalid tag"),
        ("alpine:" + "x" * 129, "invalid tag"),
        ("alpine@sha256:short", "invalid digest"),
        ("alpine@md5", "invalid digest"),
        ("alpine@sha256:" + "a" * 32, "invalid digest"),
        ("alpine@sha256:" + "A" * 64, "invalid digest"),
        ("alpine:t\u00e4g", "invalid tag"),
        ("alpine:\u0663\u0664", "invalid tag"),
        ("registry.example.com/", "names no repository"),
        ("registry.example.com//app", "invalid repository name"),
        ("team/app..x", "invalid repository name"),
        ("bad_host!:5000/app", "invalid registry host"),
    ],
)
def test_invalid_references_name_the_field_and_the_rule(text, says):
    with pytest.raises(InvalidImageReference) as caught:
        parse_image_reference(text)
    assert caught.value.field == "image"
    assert str(caught.value).startswith("image: ")
    assert says in str(caught.value)


def _registry(address: str, user: str) -> RegistryCredentials:
    return RegistryCredentials(address=address, username=user, password="pw-" + user)


def test_credentials_are_picked_by_registry_host():
    registries = [
        _registry("https://index.docker.io/v1/", "hub"),
        _registry("localhost:5000", "local"),
        _registry("myacr.azurecr.io", "acr"),
    ]
    assert registries[0].address == "docker.io"
    pick = lambda text: find_credentials(parse_image_reference(text), registries)  # noqa: E731
    assert pick("alpine:3.19").username == "hub"
    assert pick("localhost:5000/team/app:1.0").username == "local"
    assert pick("myacr.azurecr.io/team/app@" + DIGEST).username == "acr"
    assert pick("localhost:5001/team/app:1.0") is None  # another port is another registry
    assert pick("ghcr.io/org/app:1") is None
