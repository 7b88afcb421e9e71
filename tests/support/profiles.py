"""Fixtures that run a whole-hub test package on both profiles: ``embedded`` (SQLite, the development issuer) and
``azure`` (the Azure adapters on the session's emulator stack, see :mod:`tests.support.azure_hub`).

Import them into a package's ``conftest.py`` (``from tests.support.profiles import azure_profile, hub_profile``);
a test that takes ``hub_profile`` (directly or through a fixture) runs once per profile, with ids ``embedded`` and
``azure``. The stack starts on the first ``azure`` test of the session and stops after the last; failing to start
it fails the tests. ``-k embedded`` / ``-k azure`` select one profile.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import azure_hub
from tests.support.azure_hub import AzureHubProfile

__all__ = ["PROFILES", "azure_profile", "hub_profile"]

PROFILES = ("embedded", "azure")


@pytest.fixture(scope="session")
def azure_profile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureHubProfile]:
    """The session's emulator stack (shared by every package that uses it)."""
    profile = azure_hub.acquire(tmp_path_factory.mktemp("azure-profile"))
    try:
        yield profile
    finally:
        azure_hub.release()


@pytest.fixture(params=PROFILES)
def hub_profile(request: pytest.FixtureRequest) -> AzureHubProfile | None:
    """None for the embedded profile, the session's :class:`AzureHubProfile` for the Azure one."""
    if request.param == "embedded":
        return None
    profile: AzureHubProfile = request.getfixturevalue("azure_profile")
    return profile
