"""``open_identity``: workload identity when the AKS variables are there, DefaultAzureCredential otherwise."""

from __future__ import annotations

from pathlib import Path

from azure.identity.aio import DefaultAzureCredential, WorkloadIdentityCredential

from services.platform.azure.identity import open_identity
from services.platform.settings import AzureSettings

CLIENT = "2f0c8e4a-1b3d-4c5e-8f70-9a1b2c3d4e5f"
OTHER = "5f1b4b5e-1111-4c5e-8f70-1a2b3c4d5e6f"
TENANT = "6b1f4c9e-8a0d-4f3e-9b2a-5c7d1e0f2a3b"


def _workload_env(tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text("not read until a token is asked for")
    return {
        "AZURE_FEDERATED_TOKEN_FILE": str(token),
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_AUTHORITY_HOST": "https://127.0.0.1:9",
    }


async def test_workload_identity_when_the_webhook_variables_are_set(tmp_path: Path) -> None:
    async with open_identity(AzureSettings(), _workload_env(tmp_path)) as identity:
        assert identity.source == "workload-identity"
        assert isinstance(identity.credential, WorkloadIdentityCredential)
        assert identity.client_id == CLIENT


async def test_the_configured_client_id_wins(tmp_path: Path) -> None:
    async with open_identity(AzureSettings(client_id=OTHER), _workload_env(tmp_path)) as identity:
        assert identity.source == "workload-identity"
        assert identity.client_id == OTHER
    async with open_identity(AzureSettings(client_id=OTHER), {}) as identity:
        assert identity.source == "default"
        assert identity.client_id == OTHER


async def test_default_credential_elsewhere(tmp_path: Path) -> None:
    environments: list[dict[str, str]] = [
        {},
        {"AZURE_CLIENT_ID": CLIENT},  # a managed identity's client id alone: not workload identity
        {k: v for k, v in _workload_env(tmp_path).items() if k != "AZURE_TENANT_ID"},
        {k: v for k, v in _workload_env(tmp_path).items() if k != "AZURE_CLIENT_ID"},
    ]
    for environ in environments:
        identity = open_identity(AzureSettings(), environ)
        try:
            assert identity.source == "default", environ
            assert isinstance(identity.credential, DefaultAzureCredential)
        finally:
            await identity.close()
        await identity.close()  # closing twice is harmless
