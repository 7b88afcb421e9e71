"""The local Azure stand-ins for tests: the token authority (Entra ID) and Azurite (Blob Storage).

Both are real child processes on OS-chosen ports, HTTPS with one development CA, stopped by pid. They start
from session fixtures (see ``tests/contract/objects/conftest.py``); failing to start fails the tests.

The hub's identity in these tests is one application (:data:`HUB_CLIENT_ID`) with a federated credential for
the ``execution`` service account, exactly as Terraform sets it up in Azure. In-process clients trust the CA
with ``connection_verify`` (aiohttp fixes its default trust store when it is imported, so ``SSL_CERT_FILE`` only
works for processes started with it); the subprocess tests use the standard variables alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from azure.identity.aio import WorkloadIdentityCredential

from exthub.contract.roles import AGENT
from tools.emulators.azurite import AzuriteProcess
from tools.emulators.certs import DevCertificates
from tools.emulators.token_authority import (
    AuthorityConfig,
    ClientConfig,
    ResourceConfig,
    TokenAuthorityProcess,
    secret_hash,
)

TENANT_ID = "6b1f4c9e-8a0d-4f3e-9b2a-5c7d1e0f2a3b"
HUB_CLIENT_ID = "2f0c8e4a-1b3d-4c5e-8f70-9a1b2c3d4e5f"
HUB_OBJECT_ID = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
HUB_SUBJECT = "system:serviceaccount:exthub:execution"
AGENT_CLIENT_ID = "3a1d9f5b-2c4e-4d6f-9a81-0b2c3d4e5f60"
AGENT_OBJECT_ID = "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a"
AGENT_SUBJECT = "system:serviceaccount:exthub:agent"
SECRET_CLIENT_ID = "4b2e0a6c-3d5f-4e7a-8b92-1c3d4e5f6a7b"
SECRET_OBJECT_ID = "7c6b5a4f-3e2d-4c1b-8a0f-9e8d7c6b5a4f"
CLIENT_SECRET = "exthub-test-secret-not-for-production"
API = "api://exthub"
API_SCOPE = f"{API}/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"


def authority_config() -> AuthorityConfig:
    """The tenant of the tests: the hub's execution identity, an agent identity, and a secret-based client."""
    return AuthorityConfig(
        tenant_id=TENANT_ID,
        clients=(
            ClientConfig(HUB_CLIENT_ID, HUB_OBJECT_ID, roles=(AGENT,), federated_subjects=(HUB_SUBJECT,)),
            ClientConfig(AGENT_CLIENT_ID, AGENT_OBJECT_ID, roles=(AGENT,), federated_subjects=(AGENT_SUBJECT,)),
            ClientConfig(SECRET_CLIENT_ID, SECRET_OBJECT_ID, secret_sha256=secret_hash(CLIENT_SECRET)),
        ),
        resources=(ResourceConfig(API),),
    )


@dataclass
class Emulators:
    """What the session started (each part is started on first use)."""

    base: Path
    certs_dir: Path
    _authority: TokenAuthorityProcess | None = None
    _azurite: AzuriteProcess | None = None

    def authority(self) -> TokenAuthorityProcess:
        if self._authority is None:
            self._authority = TokenAuthorityProcess.start(
                self.base / "authority",
                authority_config(),
                certs_dir=self.certs_dir,
                federated_tokens={HUB_CLIENT_ID: self.hub_token_file, AGENT_CLIENT_ID: self.agent_token_file},
            )
        return self._authority

    def azurite(self) -> AzuriteProcess:
        if self._azurite is None:
            self._azurite = AzuriteProcess.start(self.base / "azurite", certs_dir=self.certs_dir)
        return self._azurite

    @property
    def hub_token_file(self) -> Path:
        return self.base / "tokens" / "execution.token"

    @property
    def agent_token_file(self) -> Path:
        return self.base / "tokens" / "agent.token"

    @property
    def certificates(self) -> DevCertificates:
        return self.authority().certificates

    def hub_credential(self, *, authority: str | None = None) -> WorkloadIdentityCredential:
        """The execution identity's credential, as on AKS (the CA trusted through ``connection_verify``)."""
        started = self.authority()
        return WorkloadIdentityCredential(
            tenant_id=TENANT_ID,
            client_id=HUB_CLIENT_ID,
            token_file_path=str(self.hub_token_file),
            authority=authority or started.url,
            connection_verify=str(started.certificates.ca_cert),
        )

    def stop(self) -> None:
        for part in (self._azurite, self._authority):
            if part is not None:
                part.stop()


_shared: Emulators | None = None
_users = 0


def acquire(base: Path) -> Emulators:
    """The session's stand-ins, shared by every test package that asks (``base``: used by the first caller)."""
    global _shared, _users
    if _shared is None:
        _shared = Emulators(base=base, certs_dir=base / "certs")
    _users += 1
    return _shared


def release() -> None:
    """Stop the stand-ins when the last package that acquired them is done."""
    global _shared, _users
    _users -= 1
    if _users <= 0 and _shared is not None:
        _shared.stop()
        _shared = None
