"""The Azure profile for the whole-hub tests: the emulator stack of ``exthub up --backend azure --emulators``
(:class:`tools.emulators.stack.EmulatorStack`), started once per session, and per-test isolation on it.

Each test gets a fresh Cosmos DB database, a fresh blob container and a fresh Service Bus namespace on the one
test broker (the broker keeps one set of entities per namespace the client names), so tests never see each other's
documents, blobs or messages. The in-process services get the execution identity's standard ``AZURE_*``
variables (:attr:`AzureHubProfile.environ`) and build every Azure client through ``services.platform.backends``
exactly as in a pod; users' tokens come from the stack's token authority.

The test process trusts the development CA as a process started with ``SSL_CERT_FILE`` would: the variable is set
(for the contexts made from now on) and the CA is added to aiohttp's default context, which aiohttp built when it
was imported (azure-identity, azure-storage-blob and the hub's JWKS client use it).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.platform.settings import Settings
from tools.emulators.stack import API, EmulatorStack

__all__ = ["AzureHubProfile", "acquire", "release"]

Metadata = tuple[tuple[str, str], ...]
BROKER_LOCK_SECONDS = 5.0


def _trust_in_this_process(ca_cert: Path, trust_bundle: Path) -> None:
    os.environ["SSL_CERT_FILE"] = str(trust_bundle)
    from aiohttp import connector

    default: ssl.SSLContext = connector._SSL_CONTEXT_VERIFIED
    default.load_verify_locations(cafile=str(ca_cert))


@dataclass
class AzureHubProfile:
    """The session's emulator stack and what one test's hub needs of it."""

    stack: EmulatorStack

    @property
    def environ(self) -> dict[str, str]:
        """The standard variables of the in-process services (one process: the execution service's identity)."""
        return self.stack.service_environment("execution")

    def agent_environ(self) -> dict[str, str]:
        """The standard variables of an agent process (its own identity)."""
        return self.stack.service_environment("agent")

    async def isolated(self) -> dict[str, Any]:
        """Settings overrides for one test's hub: the backend, the emulators' endpoints, fresh names."""
        suffix = uuid.uuid4().hex[:12]
        container = f"t-{suffix}"
        await asyncio.to_thread(self.stack.provision_storage, container)
        environment = self.stack.hub_environment()
        azure: dict[str, Any] = {
            "cosmos_endpoint": environment["EXTHUB_AZURE__COSMOS_ENDPOINT"],
            "cosmos_database": f"t{suffix}",
            "blob_account_url": environment["EXTHUB_AZURE__BLOB_ACCOUNT_URL"],
            "blob_container": container,
            "service_token_scope": environment["EXTHUB_AZURE__SERVICE_TOKEN_SCOPE"],
        }
        azure.update(self.stack.servicebus_settings(namespace=f"t{suffix}"))
        return {
            "backend": "azure",
            "azure": azure,
            "auth": {"issuers": [self.stack.issuer], "audiences": [API], "jwks_uri": self.stack.jwks_uri},
        }

    def process_environment(self, settings: Settings) -> dict[str, str]:
        """The variables an agent process of the hub of ``settings`` reads: the Azure backend, its endpoints and
        names, the hub's issuer, and the agent identity's standard variables."""
        azure = settings.azure.model_dump(exclude_none=True)
        return {
            **self.agent_environ(),
            "EXTHUB_BACKEND": "azure",
            **{f"EXTHUB_AZURE__{key.upper()}": str(value) for key, value in azure.items()},
            "EXTHUB_AUTH__ISSUERS": ",".join(settings.auth.issuers),
            "EXTHUB_AUTH__AUDIENCES": ",".join(settings.auth.audiences),
            "EXTHUB_AUTH__JWKS_URI": str(settings.auth.jwks_uri),
        }

    def token_factory(self) -> Callable[..., Metadata]:
        """``token(roles=[...], tenant=..., user=...)`` → call metadata with a user token of the authority."""

        def make(
            *, roles: tuple[str, ...] = ("Executions.Run",), tenant: str = "tenant-a", user: str = "user-1"
        ) -> Metadata:
            return (("authorization", f"Bearer {self.bearer(roles=roles, tenant=tenant, user=user)}"),)

        return make

    def bearer(self, *, roles: tuple[str, ...] | list[str] = (), tenant: str = "tenant-a", user: str = "user-1") -> str:
        """A user token (``tid`` = ``tenant``) for the hub's API."""
        return self.stack.user_token(roles=roles, tenant=tenant, user=user)


_shared: AzureHubProfile | None = None
_users = 0


def acquire(base: Path) -> AzureHubProfile:
    """The session's Azure profile (the stack starts on first use, under ``base``), shared by every test package
    that asks; a stack that cannot start fails the tests."""
    global _shared, _users
    if _shared is None:
        # a short lock: a killed agent's message comes back in seconds (the agents renew it every heartbeat)
        stack = EmulatorStack.start(base, broker_lock_seconds=BROKER_LOCK_SECONDS)
        _trust_in_this_process(stack.certificates.ca_cert, stack.certificates.trust_bundle)
        _shared = AzureHubProfile(stack)
    _users += 1
    return _shared


def release() -> None:
    """Stop the stack when the last package that acquired it is done."""
    global _shared, _users
    _users -= 1
    if _users <= 0 and _shared is not None:
        _shared.stack.stop()
        _shared = None
