"""Pytest fixtures for the identity doubles: import the ones a test module uses.

Session-scoped like ``tests/conftest.py``'s services: one managed-identity
endpoint double, one Azurite with OAuth (HTTPS), one ACR double with the
sample image pushed through it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.acr import AcrDouble
from tests.support.azurite import Azurite
from tests.support.identity import Identity, ManagedIdentityEndpoint
from tests.support.images import ImageTarball

SAMPLE_REPOSITORY, SAMPLE_TAG = "team/app", "1.0"


@pytest.fixture(scope="session")
def user_assigned() -> Identity:
    """A user-assigned identity, in the same tenant as the system-assigned one."""
    return Identity()


@pytest.fixture(scope="session")
def msi(user_assigned: Identity) -> Iterator[ManagedIdentityEndpoint]:
    system = Identity(tenant_id=user_assigned.tenant_id)
    with ManagedIdentityEndpoint(system=system, user_assigned=(user_assigned,)) as endpoint:
        yield endpoint


@pytest.fixture(autouse=False)
def fresh_msi(msi: ManagedIdentityEndpoint) -> Iterator[ManagedIdentityEndpoint]:
    """The endpoint with its per-test knobs reset afterwards."""
    yield msi
    msi.lifetime, msi.audience_override = 3600, None
    msi.lifetimes.clear()


@pytest.fixture(scope="session")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite-oauth"), oauth=True) as storage:
        yield storage


@pytest.fixture(scope="session")
def acr(tmp_path_factory: pytest.TempPathFactory, msi: ManagedIdentityEndpoint,
        sample_image: ImageTarball) -> Iterator[AcrDouble]:
    with AcrDouble(tmp_path_factory.mktemp("acr"), msi.minter, msi.system.tenant_id) as registry:
        registry.roles[msi.system.principal_id] = {"AcrPull"}
        registry.push(sample_image.path, SAMPLE_REPOSITORY, SAMPLE_TAG)
        yield registry
