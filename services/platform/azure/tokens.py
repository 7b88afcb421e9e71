"""The services' own bearer tokens on the Azure backend: Entra ID tokens for ``EXTHUB_AZURE__SERVICE_TOKEN_SCOPE``.

The hub's gRPC clients read a token synchronously for each call (``TokenSource.token()``), while an
azure-identity credential is asynchronous: :class:`AzureServiceTokens` gets the first token when the service
starts and keeps a fresh one in the background, well before the current one expires (the credential caches and
refreshes on its side too). A refresh that fails is retried every few seconds; meanwhile the last token is used
until it expires, so a short Entra ID outage costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError

from services.platform.errors import Unavailable
from services.platform.logging import get_logger

__all__ = ["AzureServiceTokens"]

_log = get_logger("exthub.platform.azure.tokens")

DEFAULT_REFRESH_MARGIN_SECONDS = 600.0
DEFAULT_RETRY_SECONDS = 5.0
DEFAULT_TIMEOUT_SECONDS = 15.0


class AzureServiceTokens:
    """A ``TokenSource`` (``token() -> str``) backed by an ``AsyncTokenCredential`` for one scope.

    Call :meth:`start` once (it gets the first token or raises ``Unavailable``), :meth:`close` on shutdown.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self.scope = scope
        self._margin = refresh_margin_seconds
        self._retry = retry_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._current: AccessToken | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Get the first token (bounded by the timeout) and keep it fresh in the background."""
        self._current = await self._fetch()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh(), name="service-token-refresh")

    def token(self) -> str:
        """The current token ("" before :meth:`start`)."""
        return self._current.token if self._current is not None else ""

    @property
    def expires_on(self) -> float:
        """When the current token expires (Unix seconds; 0 before :meth:`start`)."""
        return float(self._current.expires_on) if self._current is not None else 0.0

    async def close(self) -> None:
        """Stop refreshing (the credential belongs to the caller)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _fetch(self) -> AccessToken:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._credential.get_token(self.scope)
        except (AzureError, TimeoutError, OSError, ValueError) as error:
            # the credential's message can name the authority and the client; it stays in the log
            _log.warning("cannot get a service token", scope=self.scope, error=type(error).__name__, detail=str(error))
            raise Unavailable(f"no token for the service scope {self.scope}") from None

    def _due(self) -> float:
        """Seconds until the next refresh: the margin before expiry, at most half the remaining lifetime."""
        if self._current is None:
            return 0.0
        remaining = self._current.expires_on - self._clock()
        return max(0.0, min(remaining - self._margin, remaining / 2))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._due())
            try:
                self._current = await self._fetch()
            except Unavailable:
                await asyncio.sleep(self._retry)
