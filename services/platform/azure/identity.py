"""The one Azure credential of a service process (every Azure client is built with it).

On AKS the workload-identity webhook sets ``AZURE_FEDERATED_TOKEN_FILE``, ``AZURE_TENANT_ID``,
``AZURE_CLIENT_ID`` and ``AZURE_AUTHORITY_HOST``: then the process uses ``WorkloadIdentityCredential``
(it exchanges the projected service-account token for Entra ID tokens). Anywhere else it uses
``DefaultAzureCredential`` (managed identity, the Azure CLI of a developer, …). ``EXTHUB_AZURE__CLIENT_ID``
picks a user-assigned identity in both cases; otherwise the standard ``AZURE_CLIENT_ID`` applies.

The local emulator profile takes exactly the same path: a local token authority plays Entra ID behind
``AZURE_AUTHORITY_HOST``, and ``SSL_CERT_FILE`` makes its development CA trusted. There is no key,
connection string or SAS anywhere in this module's inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential, WorkloadIdentityCredential

from services.platform.settings import AzureSettings

__all__ = ["AzureIdentity", "CredentialSource", "open_identity"]

_log = logging.getLogger(__name__)

CredentialSource = Literal["workload-identity", "default"]


@dataclass
class AzureIdentity:
    """The process's credential, what it was built from, and its shutdown (``close`` or ``async with``)."""

    credential: AsyncTokenCredential
    source: CredentialSource
    client_id: str | None

    async def close(self) -> None:
        """Release the credential's HTTP sessions (idempotent)."""
        await self.credential.close()

    async def __aenter__(self) -> AzureIdentity:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def open_identity(settings: AzureSettings, environ: Mapping[str, str] | None = None) -> AzureIdentity:
    """Build the credential from the settings and the environment (``os.environ`` unless given).

    ``WorkloadIdentityCredential`` when ``AZURE_FEDERATED_TOKEN_FILE`` and ``AZURE_TENANT_ID`` are set and a
    client id is known (``EXTHUB_AZURE__CLIENT_ID`` or ``AZURE_CLIENT_ID``); ``DefaultAzureCredential``
    otherwise. The authority is ``AZURE_AUTHORITY_HOST`` (Entra ID's public cloud when unset).
    Close the result on shutdown.
    """
    env = os.environ if environ is None else environ
    client_id = settings.client_id or env.get("AZURE_CLIENT_ID") or None
    authority = env.get("AZURE_AUTHORITY_HOST") or None
    token_file = env.get("AZURE_FEDERATED_TOKEN_FILE")
    tenant_id = env.get("AZURE_TENANT_ID")
    if token_file and tenant_id and client_id:
        _log.info("azure identity: workload identity", extra={"client_id": client_id})
        credential: AsyncTokenCredential = WorkloadIdentityCredential(
            tenant_id=tenant_id, client_id=client_id, token_file_path=token_file, authority=authority
        )
        return AzureIdentity(credential, "workload-identity", client_id)
    _log.info("azure identity: DefaultAzureCredential", extra={"client_id": client_id})
    options: dict[str, str] = {}
    if client_id:
        options["managed_identity_client_id"] = client_id
        options["workload_identity_client_id"] = client_id
    if authority:
        options["authority"] = authority
    return AzureIdentity(DefaultAzureCredential(**options), "default", client_id)
