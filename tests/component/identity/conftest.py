"""Fixtures for the identity tests: the session's token authority (and Azurite), started once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import azure_emulators
from tests.support.azure_emulators import Emulators


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    """The token authority and Azurite (shared with the object contract suite; failing to start fails)."""
    started = azure_emulators.acquire(tmp_path_factory.mktemp("azure-emulators"))
    try:
        yield started
    finally:
        azure_emulators.release()
