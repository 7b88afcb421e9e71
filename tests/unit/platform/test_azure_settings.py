"""The Azure section of the settings (``EXTHUB_AZURE__…``): required endpoints, https, no secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.platform.settings import AzureSettings, Settings

COMPLETE = {
    "EXTHUB_AZURE__COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
    "EXTHUB_AZURE__SERVICEBUS_NAMESPACE": "ns.servicebus.windows.net",
    "EXTHUB_AZURE__BLOB_ACCOUNT_URL": "https://acct.blob.core.windows.net/",
    "EXTHUB_AZURE__SERVICE_TOKEN_SCOPE": "api://exthub/.default",
}
AUTH = {
    "EXTHUB_AUTH__ISSUERS": "https://login.microsoftonline.com/t/v2.0",
    "EXTHUB_AUTH__AUDIENCES": "api://exthub",
    "EXTHUB_AUTH__JWKS_URI": "https://login.microsoftonline.com/t/discovery/v2.0/keys",
}


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("EXTHUB_BACKEND", "azure")
    for name, value in {**COMPLETE, **AUTH}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_a_complete_azure_backend(azure_env: pytest.MonkeyPatch) -> None:
    azure_env.setenv("EXTHUB_AZURE__CLIENT_ID", "5F1B4B5E-1111-4C5E-8F70-1A2B3C4D5E6F")
    azure = Settings().azure
    assert azure.cosmos_endpoint == "https://acct.documents.azure.com:443"
    assert azure.cosmos_database == "exthub"
    assert azure.servicebus_namespace == "ns.servicebus.windows.net"
    assert azure.blob_account_url == "https://acct.blob.core.windows.net"
    assert azure.blob_container == "exthub-objects"
    assert azure.client_id == "5f1b4b5e-1111-4c5e-8f70-1a2b3c4d5e6f"
    assert azure.service_token_scope == "api://exthub/.default"
    assert azure.missing_for() == []


@pytest.mark.parametrize("missing", sorted(COMPLETE))
def test_each_missing_endpoint_is_named(azure_env: pytest.MonkeyPatch, missing: str) -> None:
    azure_env.delenv(missing)
    if missing == "EXTHUB_AZURE__SERVICE_TOKEN_SCOPE":  # every service needs it: refused by the model itself
        with pytest.raises(ValidationError, match=f"EXTHUB_BACKEND=azure needs {missing} \\(not set\\)"):
            Settings()
        return
    settings = Settings()
    with pytest.raises(ValueError, match=f"EXTHUB_BACKEND=azure needs {missing} \\(not set\\)") as info:
        settings.require_backend()  # exthub up runs every service: it needs every endpoint
    for other in set(COMPLETE) - {missing}:
        assert other not in str(info.value)


@pytest.mark.parametrize(
    ("service", "needs"),
    [
        ("catalog", ["EXTHUB_AZURE__COSMOS_ENDPOINT"]),
        ("agent", ["EXTHUB_AZURE__SERVICEBUS_NAMESPACE"]),
        (
            "execution",
            ["EXTHUB_AZURE__COSMOS_ENDPOINT", "EXTHUB_AZURE__SERVICEBUS_NAMESPACE", "EXTHUB_AZURE__BLOB_ACCOUNT_URL"],
        ),
    ],
)
def test_each_service_needs_only_its_own_endpoints(
    monkeypatch: pytest.MonkeyPatch, service: str, needs: list[str]
) -> None:
    monkeypatch.setenv("EXTHUB_BACKEND", "azure")
    for name, value in AUTH.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EXTHUB_AZURE__SERVICE_TOKEN_SCOPE", COMPLETE["EXTHUB_AZURE__SERVICE_TOKEN_SCOPE"])
    settings = Settings()
    with pytest.raises(ValueError, match="needs " + ", ".join(needs) + r" \(not set\)"):
        settings.require_backend(service)
    for name in needs:
        monkeypatch.setenv(name, COMPLETE[name])
    Settings().require_backend(service)  # its own endpoints are enough, whatever the others


def test_all_missing_endpoints_are_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTHUB_BACKEND", "azure")
    for name, value in AUTH.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EXTHUB_AZURE__SERVICE_TOKEN_SCOPE", COMPLETE["EXTHUB_AZURE__SERVICE_TOKEN_SCOPE"])
    endpoints = [name for name in COMPLETE if name != "EXTHUB_AZURE__SERVICE_TOKEN_SCOPE"]
    with pytest.raises(ValueError, match="needs " + ", ".join(endpoints) + r" \(not set\)"):
        Settings().require_backend()


def test_the_local_backend_needs_no_azure_setting() -> None:
    assert Settings(backend="local").azure == AzureSettings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "http://acct.blob.core.windows.net"),
        ("EXTHUB_AZURE__COSMOS_ENDPOINT", "http://acct.documents.azure.com:443/"),
        ("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "acct.blob.core.windows.net"),
        ("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "ftp://acct.blob.core.windows.net"),
    ],
)
def test_non_loopback_endpoints_need_https(azure_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    azure_env.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        Settings()


def test_plain_http_is_allowed_on_loopback_only() -> None:
    local = AzureSettings(
        blob_account_url="http://127.0.0.1:10000/devstoreaccount1", cosmos_endpoint="http://[::1]:8081"
    )
    assert local.blob_account_url == "http://127.0.0.1:10000/devstoreaccount1"
    assert AzureSettings(blob_account_url="https://127.0.0.1:10000/devstoreaccount1").blob_account_url


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        # a SAS or a key in a URL would be a secret in the settings
        ("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "https://acct.blob.core.windows.net/?sv=2026-10-06&sig=abc"),
        ("EXTHUB_AZURE__BLOB_ACCOUNT_URL", "https://user:key@acct.blob.core.windows.net"),
        ("EXTHUB_AZURE__COSMOS_ENDPOINT", "https://acct.documents.azure.com/#key"),
        ("EXTHUB_AZURE__SERVICEBUS_NAMESPACE", "sb://ns.servicebus.windows.net/"),
        ("EXTHUB_AZURE__SERVICEBUS_NAMESPACE", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=x"),
        ("EXTHUB_AZURE__BLOB_CONTAINER", "Exthub_Objects"),
        ("EXTHUB_AZURE__BLOB_CONTAINER", "ab"),
        ("EXTHUB_AZURE__BLOB_CONTAINER", "a--b"),
        ("EXTHUB_AZURE__CLIENT_ID", "not-a-guid"),
        ("EXTHUB_AZURE__SERVICE_TOKEN_SCOPE", "api://exthub"),
        ("EXTHUB_AZURE__COSMOS_DATABASE", "bad name"),
    ],
)
def test_malformed_values_are_refused(azure_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    azure_env.setenv(variable, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert variable in str(info.value)


def test_the_servicebus_namespace_may_be_a_test_broker_address() -> None:
    assert AzureSettings(servicebus_namespace="127.0.0.1:5671").servicebus_namespace == "127.0.0.1:5671"


@pytest.mark.parametrize(
    "variable",
    [
        "EXTHUB_AZURE__ACCOUNT_KEY",
        "EXTHUB_AZURE__CONNECTION_STRING",
        "EXTHUB_AZURE__BLOB_SAS",
        "EXTHUB_AZURE__COSMOS_KEY",
        "EXTHUB_AZURE__SERVICEBUS_CONNECTION_STRING",
    ],
)
def test_there_is_no_key_connection_string_or_sas_setting(azure_env: pytest.MonkeyPatch, variable: str) -> None:
    secret = "c2VjcmV0LWtleS12YWx1ZQ=="
    azure_env.setenv(variable, secret)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "Extra inputs are not permitted" in str(info.value)
    assert secret not in str(info.value)  # the refusal never echoes the value
    assert not any("key" in name or "sas" in name or "connection" in name for name in AzureSettings.model_fields)
