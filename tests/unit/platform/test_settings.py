"""Settings: environment parsing, algorithm guard, development defaults, page-token secret file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, dev_jwks_path
from services.platform.settings import DEFAULT_ALGORITHMS, AuthSettings, Settings


def test_env_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXTHUB_BACKEND", "azure")
    monkeypatch.setenv("EXTHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EXTHUB_CATALOG_PORT", "0")
    monkeypatch.setenv("EXTHUB_LOG_LEVEL", "debug")
    monkeypatch.setenv("EXTHUB_PUBLIC_URL", "https://hub.example.com/")
    monkeypatch.setenv("EXTHUB_AUTH__ISSUERS", "https://sts.windows.net/t/,https://login.microsoftonline.com/t/v2.0")
    monkeypatch.setenv("EXTHUB_AUTH__AUDIENCES", '["api://exthub", "0000-guid"]')
    monkeypatch.setenv("EXTHUB_AUTH__JWKS_URI", "https://login.microsoftonline.com/t/discovery/v2.0/keys")
    monkeypatch.setenv("EXTHUB_AUTH__CLOCK_SKEW_SECONDS", "30")
    monkeypatch.setenv("EXTHUB_AZURE__COSMOS_ENDPOINT", "https://acct.documents.azure.com")
    monkeypatch.setenv("EXTHUB_AZURE__SERVICEBUS_NAMESPACE", "ns.servicebus.windows.net")
    monkeypatch.setenv("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("EXTHUB_AZURE__SERVICE_TOKEN_SCOPE", "api://exthub/.default")
    monkeypatch.setenv("EXTHUB_PAGE_TOKEN_SECRET", "a-very-long-page-token-secret")
    settings = Settings()
    assert settings.backend == "azure"
    assert settings.data_dir == tmp_path
    assert settings.catalog_port == 0
    assert settings.log_level == "DEBUG"
    assert settings.public_url == "https://hub.example.com"
    assert settings.auth.issuers == ["https://sts.windows.net/t/", "https://login.microsoftonline.com/t/v2.0"]
    assert settings.auth.audiences == ["api://exthub", "0000-guid"]
    assert settings.auth.clock_skew_seconds == 30
    assert settings.auth.allowed_algorithms == list(DEFAULT_ALGORITHMS)
    assert settings.azure.cosmos_endpoint == "https://acct.documents.azure.com"
    assert settings.page_token_key() == b"a-very-long-page-token-secret"
    assert "a-very-long-page-token-secret" not in repr(settings)
    assert "a-very-long-page-token-secret" not in str(settings.model_dump())


@pytest.mark.parametrize("algorithms", ["none", "HS256", "ES256,HS512", '["RS256", "None"]', "XYZ1", ""])
def test_symmetric_and_none_algorithms_are_refused(monkeypatch: pytest.MonkeyPatch, algorithms: str) -> None:
    monkeypatch.setenv("EXTHUB_AUTH__ALLOWED_ALGORITHMS", algorithms)
    with pytest.raises(ValidationError, match="allowed_algorithms"):
        Settings()


def test_auth_algorithms_guard_on_the_model() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(allowed_algorithms=["HS256"])
    assert AuthSettings(allowed_algorithms=["ES256", "EdDSA"]).allowed_algorithms == ["ES256", "EdDSA"]


def test_local_defaults_use_the_development_issuer(tmp_path: Path) -> None:
    settings = Settings.local_defaults(tmp_path)
    assert settings.auth.issuers == [DEV_ISSUER]
    assert settings.auth.audiences == [DEV_AUDIENCE]
    assert settings.auth.jwks_file == dev_jwks_path(tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.shutdown_grace_seconds == 10
    assert Settings().auth.jwks_file == dev_jwks_path(Path(".exthub-data"))


def test_azure_backend_requires_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTHUB_BACKEND", "azure")
    monkeypatch.setenv("EXTHUB_AZURE__COSMOS_ENDPOINT", "https://acct.documents.azure.com")
    monkeypatch.setenv("EXTHUB_AZURE__SERVICEBUS_NAMESPACE", "ns.servicebus.windows.net")
    monkeypatch.setenv("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("EXTHUB_AZURE__SERVICE_TOKEN_SCOPE", "api://exthub/.default")
    with pytest.raises(ValidationError, match="auth needs"):
        Settings()


def test_partial_local_auth_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="auth needs"):
        Settings(data_dir=tmp_path, auth=AuthSettings(issuers=["https://x"]))


def test_only_one_jwks_source() -> None:
    with pytest.raises(ValidationError, match="only one"):
        AuthSettings(jwks_file=Path("k.json"), jwks_uri="https://x/keys")


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [
        ("EXTHUB_BACKEND", "gcp"),
        ("EXTHUB_CATALOG_PORT", "70000"),
        ("EXTHUB_LOG_FORMAT", "xml"),
        ("EXTHUB_PUBLIC_URL", "ftp://x"),
        ("EXTHUB_PAGE_TOKEN_SECRET", "short"),
        ("EXTHUB_AUTH__JWKS_URI", "http://evil.example/keys"),
    ]:
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(ValidationError):
                Settings()


def test_page_token_secret_file_is_created_once_with_0600(tmp_path: Path) -> None:
    settings = Settings.local_defaults(tmp_path)
    first = settings.page_token_key()
    assert len(first) == 32
    path = settings.page_token_secret_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings.local_defaults(tmp_path).page_token_key() == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind
