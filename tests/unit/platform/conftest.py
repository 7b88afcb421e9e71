"""Fixtures for the platform unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from exthub.contract.dev_tokens import DevIssuer
from services.platform.settings import AuthSettings

_GEN = Path(__file__).resolve().parents[3] / "gen" / "python"
if _GEN.is_dir() and str(_GEN) not in sys.path:
    sys.path.append(str(_GEN))  # generated stubs (exthub.type.v1 …) when pytest is not given the path


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    """A development issuer with its keys in a fresh data directory."""
    return DevIssuer.load_or_create(tmp_path)


@pytest.fixture
def auth_settings(tmp_path: Path, issuer: DevIssuer) -> AuthSettings:
    """Auth settings that trust the development issuer of ``tmp_path``."""
    return AuthSettings.development(tmp_path)


@pytest.fixture(autouse=True)
def _clean_exthub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings tests must not see the developer's own ``EXTHUB_…`` variables."""
    import os

    for name in list(os.environ):
        if name.startswith("EXTHUB_"):
            monkeypatch.delenv(name)
