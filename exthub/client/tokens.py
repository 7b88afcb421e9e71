"""Where the client's bearer tokens come from: a fixed token, the local development issuer, or azure-identity.

Every provider answers :meth:`TokenProvider.token` with a token that is valid now, caching it until shortly
before it expires, and is safe to call from many concurrent RPCs (one refresh at a time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from azure.core.exceptions import AzureError

from exthub.contract.dev_tokens import KEY_FILE, DevIssuer, DevTokens

__all__ = [
    "AzureCredential",
    "AzureCredentialTokenProvider",
    "DevTokenProvider",
    "StaticTokenProvider",
    "TokenProvider",
    "TokenProviderError",
]

Clock = Callable[[], float]


class TokenProviderError(Exception):
    """No token can be had (no key, no credential); the message says what to do in one line."""


class TokenProvider(Protocol):
    """A source of bearer tokens for the hub."""

    async def token(self) -> str:
        """A token valid now (without the ``Bearer`` prefix)."""
        ...

    async def close(self) -> None:
        """Release what the provider owns (a credential, a session)."""
        ...


class StaticTokenProvider:
    """Always the same token (``--token``, ``EXTHUB_TOKEN``): the caller keeps it fresh."""

    def __init__(self, token: str) -> None:
        text = token.strip()
        if text.lower().startswith("bearer "):
            text = text[len("bearer ") :].strip()
        if not text:
            raise TokenProviderError("the token is empty")
        self._token = text

    async def token(self) -> str:
        """The token given at construction."""
        return self._token

    async def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=<redacted>)"


class _Cached(NamedTuple):
    token: str
    expires_at: float


class DevTokenProvider:
    """Mints tokens with the local hub's development issuer (the key in ``data_dir/keys``), cached by
    :class:`~exthub.contract.dev_tokens.DevTokens`.

    By default the key must exist already (the hub created it, so the hub trusts it): a missing key is a
    :class:`TokenProviderError`, not a fresh key the hub would reject. ``create_key=True`` creates it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        roles: Iterable[str] = (),
        tenant: str = "local",
        user: str = "developer",
        ttl_seconds: int = 3600,
        refresh_margin_seconds: float = 60.0,
        create_key: bool = False,
        clock: Clock = time.time,
    ) -> None:
        if ttl_seconds <= refresh_margin_seconds:
            raise ValueError("ttl_seconds must be longer than refresh_margin_seconds")
        self.data_dir = data_dir
        self.roles = tuple(sorted(set(roles)))
        self.tenant = tenant
        self.user = user
        self._ttl = ttl_seconds
        self._margin = refresh_margin_seconds
        self._create_key = create_key
        self._clock = clock
        self._tokens: DevTokens | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A cached development token, minted again when it is within the refresh margin of expiry."""
        async with self._lock:
            if self._tokens is None:
                self._tokens = DevTokens(
                    await self._load_issuer(),
                    tenant=self.tenant,
                    user=self.user,
                    roles=self.roles,
                    ttl_seconds=self._ttl,
                    refresh_margin_seconds=self._margin,
                    clock=self._clock,
                )
            return self._tokens.token()

    async def _load_issuer(self) -> DevIssuer:
        key_exists = await asyncio.to_thread((self.data_dir / KEY_FILE).exists)
        if not key_exists and not self._create_key:
            raise TokenProviderError(
                f"no development issuer key in {self.data_dir} (start the hub with "
                f"`exthub up --data-dir {self.data_dir}`, or pass a token with --token / EXTHUB_TOKEN)"
            )
        try:
            return await asyncio.to_thread(DevIssuer.load_or_create, self.data_dir)
        except OSError as error:
            raise TokenProviderError(
                f"cannot read the development issuer key in {self.data_dir}: {error.strerror or error}"
            ) from None

    async def close(self) -> None:
        """Nothing to release."""


class AzureAccessToken(Protocol):
    """What ``get_token`` returns (``azure.core.credentials.AccessToken``)."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class AzureCredential(Protocol):
    """The part of an ``azure.identity.aio`` credential the provider uses."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken: ...


class AzureCredentialTokenProvider:
    """Entra ID access tokens for ``scope`` (e.g. ``api://exthub/.default``) from an azure-identity credential.

    The token is cached until ``refresh_margin_seconds`` before its ``expires_on``; concurrent callers share
    one refresh. Use :meth:`default` for ``DefaultAzureCredential`` (workload identity, managed identity,
    Azure CLI …); a credential built here is closed by :meth:`close`, one passed in is not.
    """

    def __init__(
        self,
        credential: AzureCredential,
        scope: str,
        *,
        refresh_margin_seconds: float = 300.0,
        clock: Clock = time.time,
        owns_credential: bool = False,
    ) -> None:
        if not scope.strip():
            raise ValueError("scope must not be empty")
        self._credential = credential
        self.scope = scope
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._owns = owns_credential
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def default(cls, scope: str, **kwargs: Any) -> AzureCredentialTokenProvider:
        """A provider over ``azure.identity.aio.DefaultAzureCredential()`` (closed with the provider)."""
        from azure.identity.aio import DefaultAzureCredential

        return cls(DefaultAzureCredential(), scope, owns_credential=True, **kwargs)

    async def token(self) -> str:
        """The cached access token, or a fresh one from the credential when it is close to expiry."""
        async with self._lock:
            now = self._clock()
            if self._cached is not None and self._cached.expires_at - self._margin > now:
                return self._cached.token
            try:
                access = await self._credential.get_token(self.scope)
            except AzureError as error:  # ClientAuthenticationError, CredentialUnavailableError, …
                raise TokenProviderError(f"azure-identity could not get a token for {self.scope}: {error}") from None
            self._cached = _Cached(access.token, float(access.expires_on))
            return access.token

    async def close(self) -> None:
        """Close the credential if this provider created it."""
        if self._owns:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()
