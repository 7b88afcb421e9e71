"""Token providers: static, the development issuer (real keys on disk), and azure-identity credentials.

There is no Entra ID here, so the Azure provider is driven by a small fake credential that implements the
``get_token(*scopes)`` contract of ``azure.identity.aio`` credentials (returning ``azure.core``'s
``AccessToken``); everything else is real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from exthub.client import AzureCredentialTokenProvider, DevTokenProvider, StaticTokenProvider, TokenProviderError
from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, KEY_FILE, DevIssuer
from exthub.contract.roles import EXECUTIONS_RUN


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """Stands in for an ``azure.identity.aio`` credential: counts calls, hands out numbered tokens."""

    def __init__(self, clock: FakeClock, lifetime: float = 3600, *, fail: bool = False) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.fail = fail
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False
        self.release = asyncio.Event()
        self.release.set()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        await self.release.wait()
        if self.fail:
            raise ClientAuthenticationError("no managed identity endpoint")
        return AccessToken(f"token-{len(self.scopes)}", int(self.clock() + self.lifetime))

    async def close(self) -> None:
        self.closed = True


async def test_static_provider_returns_its_token_and_strips_a_bearer_prefix() -> None:
    assert await StaticTokenProvider("  abc.def.ghi ").token() == "abc.def.ghi"
    assert await StaticTokenProvider("Bearer abc").token() == "abc"
    assert "abc" not in repr(StaticTokenProvider("abc"))
    with pytest.raises(TokenProviderError):
        StaticTokenProvider("  ")


async def test_dev_provider_mints_tokens_the_issuer_signed_with_the_roles(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path)
    clock = FakeClock()
    provider = DevTokenProvider(tmp_path, roles=[EXECUTIONS_RUN, EXECUTIONS_RUN], tenant="t1", user="u1", clock=clock)
    token = await provider.token()
    claims = jwt.decode(
        token,
        jwt.PyJWK(issuer.jwks["keys"][0]).key,
        algorithms=["ES256"],
        audience=DEV_AUDIENCE,
        issuer=DEV_ISSUER,
    )
    assert (claims["tid"], claims["oid"], claims["roles"]) == ("t1", "u1", [EXECUTIONS_RUN])
    assert claims["exp"] - claims["iat"] == 3600
    assert await provider.token() == token  # cached
    clock.now += 3600 - 61  # still more than the 60 s margin left
    assert await provider.token() == token
    clock.now += 2  # within the margin: a new token
    assert await provider.token() != token


async def test_dev_provider_refuses_to_invent_a_key_the_hub_would_not_trust(tmp_path: Path) -> None:
    with pytest.raises(TokenProviderError, match="no development issuer key in"):
        await DevTokenProvider(tmp_path / "empty").token()
    assert not (tmp_path / "empty").exists()
    created = DevTokenProvider(tmp_path / "fresh", create_key=True)
    assert (await created.token()).count(".") == 2
    assert (tmp_path / "fresh" / KEY_FILE).exists()
    with pytest.raises(ValueError, match="ttl_seconds"):
        DevTokenProvider(tmp_path, ttl_seconds=30)


async def test_azure_provider_caches_until_near_expiry_and_refreshes_once_for_concurrent_callers() -> None:
    clock = FakeClock()
    credential = FakeCredential(clock, lifetime=3600)
    provider = AzureCredentialTokenProvider(credential, "api://exthub/.default", clock=clock)
    credential.release.clear()
    first = [asyncio.create_task(provider.token()) for _ in range(5)]
    await asyncio.sleep(0)  # one turn of the loop: the first caller is inside get_token, the rest wait for it
    assert len(credential.scopes) == 1
    credential.release.set()
    assert set(await asyncio.gather(*first)) == {"token-1"}
    assert credential.scopes == [("api://exthub/.default",)]  # one call for five concurrent callers
    clock.now += 3600 - 301  # more than the 5-minute margin left
    assert await provider.token() == "token-1"
    clock.now += 2
    assert await provider.token() == "token-2"
    assert len(credential.scopes) == 2
    await provider.close()
    assert not credential.closed  # the caller's credential stays open


async def test_azure_provider_turns_credential_failures_into_one_line() -> None:
    provider = AzureCredentialTokenProvider(FakeCredential(FakeClock(), fail=True), "api://exthub/.default")
    with pytest.raises(TokenProviderError, match=r"azure-identity could not get a token for api://exthub/\.default"):
        await provider.token()
    with pytest.raises(ValueError, match="scope"):
        AzureCredentialTokenProvider(FakeCredential(FakeClock()), " ")


async def test_azure_provider_closes_a_credential_it_owns() -> None:
    credential = FakeCredential(FakeClock())
    provider = AzureCredentialTokenProvider(credential, "api://exthub/.default", owns_credential=True)
    await provider.close()
    assert credential.closed


def test_default_builds_default_azure_credential() -> None:
    provider = AzureCredentialTokenProvider.default("api://exthub/.default")
    from azure.identity.aio import DefaultAzureCredential

    assert isinstance(provider._credential, DefaultAzureCredential)
    asyncio.run(provider.close())
