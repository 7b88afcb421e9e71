"""Azure Service Bus client plumbing shared by the work queue and the event publisher.

* :func:`open_client`: a ``ServiceBusClient`` from a fully qualified namespace and an ``AsyncTokenCredential``
  (no key, no connection string), AMQPS on 5671 or on an explicit ``host:port``; TLS trusts the system store
  (``SSL_CERT_FILE`` honoured) unless an ``ssl.SSLContext`` is given.
* :func:`bounded`: one SDK call within a timeout, its failures turned into ``Unavailable``
  (``BACKEND_UNAVAILABLE``): a broken link can otherwise hang for minutes.
* :func:`close_handlers`: close senders and receivers quickly and without raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from azure.servicebus import TransportType
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError

from services.platform.errors import HubError, Unavailable
from services.platform.logging import get_logger

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = ["DEFAULT_OPERATION_TIMEOUT_SECONDS", "bounded", "client_options", "close_handlers", "open_client"]

DEFAULT_OPERATION_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 2.0
#: How long a cancelled or timed-out SDK operation gets to unwind before it is left to end by itself.
CANCEL_GRACE_SECONDS = 1.0
_NAMESPACE_RE = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?")
_log = get_logger("exthub.platform.servicebus")

T = TypeVar("T")


def parse_namespace(namespace: str) -> tuple[str, int | None]:
    """``<ns>.servicebus.windows.net`` or ``host:port`` → ``(host, port or None)``; anything else is refused."""
    match = _NAMESPACE_RE.fullmatch(namespace.strip()) if isinstance(namespace, str) else None
    if match is None:
        raise ValueError("the Service Bus namespace must be a host name, optionally with :port (no scheme, no path)")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65_536:
        raise ValueError("the Service Bus namespace port is out of range")
    return match.group("host"), None if port is None else int(port)


def client_options(namespace: str, *, endpoint: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``ServiceBusClient`` for ``namespace`` (AMQPS on 5671, or on an explicit port).

    ``endpoint`` (``host:port``) is the SDK's custom endpoint: the TCP/TLS peer when it is not the namespace
    host itself (a private gateway, or the local test broker serving several namespaces).
    """
    host, port = parse_namespace(namespace)
    options: dict[str, Any] = {"fully_qualified_namespace": host, "transport_type": TransportType.Amqp}
    target = endpoint if endpoint is not None else (f"{host}:{port}" if port is not None else None)
    if target is not None:
        target_host, target_port = parse_namespace(target)
        options["custom_endpoint_address"] = f"sb://{target_host}:{target_port or 5671}"
    return options


async def open_client(
    namespace: str,
    credential: AsyncTokenCredential,
    *,
    endpoint: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ServiceBusClient:
    """A client for ``namespace`` (connections open lazily). The SDK retries briefly; callers bound the total."""
    options = client_options(namespace, endpoint=endpoint)
    context = ssl_context if ssl_context is not None else await asyncio.to_thread(ssl.create_default_context)
    return ServiceBusClient(
        credential=credential,
        ssl_context=context,
        retry_total=2,
        retry_backoff_factor=0.2,
        retry_backoff_max=2,
        **options,
    )


def unavailable(what: str, error: BaseException | None) -> Unavailable:
    """The ``Unavailable`` for a failed SDK call (its text names the operation and the kind of failure only)."""
    kind = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
    if not isinstance(error, TimeoutError | ServiceBusError | OSError):
        _log.warning("unexpected service bus failure", operation=what, error=repr(error))
    return Unavailable(f"Service Bus is unavailable ({what}: {kind}); retry")


async def bounded(
    what: str,
    operation: Awaitable[T],
    seconds: float,
    *,
    passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """Await one SDK operation within ``seconds``; every failure but ``passthrough`` becomes ``Unavailable``.

    The operation runs in a task of its own so that cancelling the caller always cancels the caller: the SDK reads
    each AMQP frame through ``asyncio.wait_for``, which (Python 3.11) returns the frame instead of raising when the
    cancellation arrives while the frame is being handed over, and the operation then goes on as if it had never
    been cancelled. A caller that loops until it is cancelled (a lock-renewal heartbeat) would never stop.
    """
    task = asyncio.ensure_future(operation)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        await _abandon(task)
        raise
    if not done:
        await _abandon(task)
        raise unavailable(what, TimeoutError())
    try:
        return task.result()
    except passthrough:
        raise
    except (HubError, asyncio.CancelledError):
        raise
    except Exception as error:  # every failure of the SDK is the backend's
        raise unavailable(what, error) from None


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and give it a moment to unwind; one that ignores the cancellation ends by itself later."""
    task.cancel()
    task.add_done_callback(_retrieve)
    await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read the outcome of an abandoned operation (nobody waits for it; asyncio would log it as never retrieved)."""
    if not task.cancelled():
        task.exception()


async def close_handlers(handlers: Sequence[Any]) -> None:
    """Close SDK senders/receivers at once, each bounded in time, ignoring their failures.

    The SDK's keep-alive task sleeps in one-second steps and ``close`` waits for it: it is cancelled first
    (a private attribute, looked up defensively) so that shutting down takes milliseconds.
    """

    async def close_one(handler: Any) -> None:
        client = getattr(handler, "_handler", None)
        keep_alive = getattr(client, "_keep_alive_thread", None)
        if isinstance(keep_alive, asyncio.Future):
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)
            client._keep_alive_thread = None  # type: ignore[union-attr]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await handler.close()

    await asyncio.gather(*(close_one(handler) for handler in handlers))
