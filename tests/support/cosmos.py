"""Test support for the Cosmos DB adapter: a token credential signed by the development issuer.

The Cosmos DB emulator checks no credentials, but the adapter is built exactly as in production, from an
``AsyncTokenCredential``: this one answers ``get_token(scope)`` with an Entra-ID-v2-shaped JWT whose audience
is the scope's resource, signed by :class:`~exthub.contract.dev_tokens.DevIssuer`. It records the
scopes asked for, so tests can check that the token path was used. No key exists anywhere.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken

from exthub.contract.dev_tokens import DevIssuer

__all__ = ["DevTokenCredential"]


class DevTokenCredential:
    """An ``azure.core`` async token credential that issues development tokens."""

    def __init__(self, issuer: DevIssuer, *, tenant: str = "exthub-dev", client_id: str = "exthub-tests") -> None:
        self._issuer = issuer
        self._tenant = tenant
        self._client_id = client_id
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A one-hour token for the first scope's resource (``https://host/.default`` → ``https://host``)."""
        self.scopes.append(tuple(scopes))
        resource = scopes[0].removesuffix("/.default") if scopes else ""
        now = int(time.time())
        token = self._issuer.sign(
            {
                "iss": f"https://login.microsoftonline.com/{self._tenant}/v2.0",
                "aud": resource,
                "sub": self._client_id,
                "oid": self._client_id,
                "tid": self._tenant,
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "ver": "2.0",
            }
        )
        return AccessToken(token, now + 3600)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> DevTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()
