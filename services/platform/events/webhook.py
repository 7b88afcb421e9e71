"""Event publishing to HTTP webhook sinks: the CloudEvents HTTP binding, structured mode.

Each event is one ``POST`` of ``application/cloudevents+json`` to every configured URL. Per sink, events go
out one after the other in the order given (so one execution's events arrive in sequence), sinks in
parallel. Per request: a timeout, no redirects followed, no credentials added.

* ``2xx``: delivered.
* ``408``, ``429``, ``5xx``, timeouts and connection errors: retried with exponential backoff and jitter
  (``Retry-After`` honoured up to the backoff cap), at most ``max_attempts`` attempts; after that the sink
  is unavailable for this batch: ``publish`` raises ``Unavailable`` and the caller publishes the batch again
  later (events the sink already took come again: it drops them by ``id``).
* any other answer (``3xx``, other ``4xx``): a permanent failure for that event at that sink, logged (scheme,
  host and port only: a URL may hold a secret) and not retried.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Sequence
from enum import Enum
from urllib.parse import urlsplit

import aiohttp
from cloudevents.core.bindings.http import HTTPMessage, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from services.platform.errors import Unavailable
from services.platform.events.port import check_webhook_url
from services.platform.logging import get_logger

__all__ = ["DEFAULT_MAX_ATTEMPTS", "DEFAULT_REQUEST_TIMEOUT_SECONDS", "WebhookEventPublisher"]

DEFAULT_REQUEST_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_SECONDS = 0.2
DEFAULT_MAX_BACKOFF_SECONDS = 5.0
RETRYABLE_STATUSES = frozenset({408, 429})
_USER_AGENT = "exthub-events/1"
_log = get_logger("exthub.platform.events.webhook")


class _Outcome(Enum):
    DELIVERED = "delivered"
    PERMANENT = "permanent"
    RETRY = "retry"


class _SinkUnavailable(Exception):
    """A sink did not take an event within the allowed attempts."""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class WebhookEventPublisher:
    """An :class:`~services.platform.events.port.EventPublisher` to HTTP sinks (see the module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        session: aiohttp.ClientSession,
        *,
        request_timeout: float,
        max_attempts: int,
        backoff_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        self._urls = tuple(urls)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._lock = asyncio.Lock()  # one batch at a time: order holds across calls too
        self._closed = False

    @classmethod
    async def open(
        cls,
        urls: Sequence[str],
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WebhookEventPublisher:
        """A publisher to ``urls`` (validated: http(s), a host, no credentials; no duplicates)."""
        checked = [check_webhook_url(url) for url in urls]
        if len(set(checked)) != len(checked):
            raise ValueError("a webhook URL is configured twice")
        if not request_timeout > 0 or not backoff_seconds >= 0 or not max_backoff_seconds >= backoff_seconds:
            raise ValueError("timeouts and backoff must be positive, the cap at least the first backoff")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError("max_attempts must be an integer of 1 or more")
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True, limit_per_host=8)
        session = aiohttp.ClientSession(
            connector=connector,
            headers={"user-agent": _USER_AGENT},
            trust_env=False,
            auto_decompress=False,
        )
        return cls(
            checked,
            session,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )

    @property
    def urls(self) -> tuple[str, ...]:
        """The sinks."""
        return self._urls

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        """POST every event to every sink in order; ``Unavailable`` when a sink stayed unavailable."""
        if self._closed:
            raise RuntimeError("the event publisher is closed")
        if not events or not self._urls:
            return
        messages = [(event.get_id(), to_structured_event(event)) for event in events]
        async with self._lock:
            results = await asyncio.gather(
                *(self._deliver(url, messages) for url in self._urls), return_exceptions=True
            )
        failed = 0
        for result in results:
            if isinstance(result, _SinkUnavailable):
                failed += 1
            elif isinstance(result, BaseException):
                raise result
        if failed:
            raise Unavailable(f"{failed} of {len(self._urls)} webhook sinks did not take the events; retry")

    async def _deliver(self, url: str, messages: Sequence[tuple[str, HTTPMessage]]) -> None:
        for event_id, message in messages:
            await self._post(url, event_id, message)

    async def _post(self, url: str, event_id: str, message: HTTPMessage) -> None:
        delay = self._backoff
        for attempt in range(1, self._max_attempts + 1):
            outcome, status, retry_after = await self._attempt(url, message)
            if outcome is _Outcome.DELIVERED:
                return
            if outcome is _Outcome.PERMANENT:
                _log.warning("webhook refused an event", sink=_origin(url), event_id=event_id, status=status)
                return
            if attempt == self._max_attempts:
                _log.warning(
                    "webhook unavailable", sink=_origin(url), event_id=event_id, status=status, attempts=attempt
                )
                raise _SinkUnavailable(url)
            pause = min(max(retry_after or 0.0, delay * random.uniform(0.5, 1.0)), self._max_backoff)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._max_backoff)

    async def _attempt(self, url: str, message: HTTPMessage) -> tuple[_Outcome, int | None, float | None]:
        try:
            async with self._session.post(
                url, data=message.body, headers=message.headers, allow_redirects=False, timeout=self._timeout
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("retry-after"))
                response.release()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return _Outcome.RETRY, None, None
        if 200 <= status < 300:
            return _Outcome.DELIVERED, status, None
        if status in RETRYABLE_STATUSES or status >= 500:
            return _Outcome.RETRY, status, retry_after
        return _Outcome.PERMANENT, status, None

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._session.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: the exponential backoff applies
    return seconds if 0 <= seconds < 3600 else None
