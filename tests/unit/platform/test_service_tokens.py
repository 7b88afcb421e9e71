"""The services' own Entra ID tokens (``AzureServiceTokens``): the first at start, a fresh one before expiry, the
last one kept while the authority fails, and ``Unavailable`` (never a credential's message) when none can be had.

The credential here is a test double of the ``AsyncTokenCredential`` protocol (the real one needs an authority:
the Azure-profile suites use azure-identity against the local token authority)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from services.platform.azure.tokens import AzureServiceTokens
from services.platform.errors import Unavailable

SCOPE = "api://exthub/.default"


class ScriptedCredential:
    """Test double: answers ``get_token`` with numbered tokens living ``lifetime`` seconds, or fails while told."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.failing = False
        self.calls: list[tuple[str, ...]] = []
        self.asked = asyncio.Event()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        self.asked.set()
        if self.failing:
            raise ClientAuthenticationError("AADSTS700016: Application with identifier 'x' was not found")
        return AccessToken(f"token-{len(self.calls)}", int(time.time() + self.lifetime))

    async def close(self) -> None:
        return None


async def test_the_first_token_comes_at_start_for_the_scope() -> None:
    credential = ScriptedCredential(lifetime=3600)
    tokens = AzureServiceTokens(credential, SCOPE)  # type: ignore[arg-type]
    assert tokens.token() == ""
    await tokens.start()
    try:
        assert tokens.token() == "token-1" and credential.calls == [(SCOPE,)]
        assert tokens.expires_on > time.time() + 3000
    finally:
        await tokens.close()


async def test_a_token_is_refreshed_before_it_expires_and_kept_while_the_authority_fails() -> None:
    credential = ScriptedCredential(lifetime=4)
    tokens = AzureServiceTokens(credential, SCOPE, refresh_margin_seconds=3, retry_seconds=0.05)  # type: ignore[arg-type]
    await tokens.start()
    try:
        credential.failing = True
        credential.asked.clear()
        async with asyncio.timeout(10):
            await credential.asked.wait()  # the refresh came before expiry (4 s lifetime, 3 s margin)
        assert tokens.token() == "token-1"  # kept: it is still valid
        credential.failing = False
        async with asyncio.timeout(10):
            while tokens.token() == "token-1":
                credential.asked.clear()
                await credential.asked.wait()
        assert tokens.token().startswith("token-")
    finally:
        await tokens.close()


async def test_no_token_at_start_is_unavailable_without_the_credentials_message() -> None:
    credential = ScriptedCredential(lifetime=3600)
    credential.failing = True
    tokens = AzureServiceTokens(credential, SCOPE)  # type: ignore[arg-type]
    with pytest.raises(Unavailable) as raised:
        await tokens.start()
    assert raised.value.reason == "BACKEND_UNAVAILABLE"
    assert "AADSTS" not in str(raised.value) and SCOPE in str(raised.value)
