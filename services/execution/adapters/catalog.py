"""The catalog port over gRPC: ``CatalogService.GetExtensionVersion``, with a short-lived cache.

A version is immutable once created except its lifecycle state, so every create of an execution asking the
catalog again costs a round trip for nothing. :class:`GrpcCatalogClient` keeps what the catalog answered,
per requested name, for a bounded time: ``version_cache_seconds`` for an exact version
(``…/versions/1.2.0``), ``latest_cache_seconds`` for ``…/versions/latest`` (which moves when a version is
created, deprecated or deleted). A deprecated or deleted version can therefore still be used by creates for
at most that long on each replica. Only answers read with the service's own token are cached (they do not
depend on the caller); refusals are never cached; concurrent look-ups of the same name share one call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from exthub.contract.dev_tokens import TokenSource
from services.execution import mapping
from services.execution.adapters.grpc_errors import hub_error_from_rpc
from services.execution.handlers.ports import CatalogVersion

if TYPE_CHECKING:
    from exthub.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

__all__ = [
    "CALL_TIMEOUT_SECONDS",
    "DEFAULT_LATEST_CACHE_SECONDS",
    "DEFAULT_VERSION_CACHE_SECONDS",
    "GrpcCatalogClient",
]

CALL_TIMEOUT_SECONDS = 10.0
DEFAULT_VERSION_CACHE_SECONDS = 5.0
DEFAULT_LATEST_CACHE_SECONDS = 1.0
MAX_CACHED_VERSIONS = 1024
_LATEST_SUFFIX = "/versions/latest"


class GrpcCatalogClient:
    """A :class:`~services.execution.handlers.ports.CatalogPort` on one catalog address: with the service's own
    token when ``tokens`` is given (the catalog shows a profile's extension settings only to the owner,
    Hub.Admin and the hub's services), else with the caller's ``authorization`` forwarded (then nothing is
    cached). See the module docstring for the cache; 0 seconds turns it off."""

    def __init__(
        self,
        address: str,
        tokens: TokenSource | None = None,
        *,
        version_cache_seconds: float = DEFAULT_VERSION_CACHE_SECONDS,
        latest_cache_seconds: float = DEFAULT_LATEST_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: CatalogServiceAsyncStub = catalog_service_pb2_grpc.CatalogServiceStub(self._channel)
        self._tokens = tokens
        self._version_seconds = version_cache_seconds
        self._latest_seconds = latest_cache_seconds
        self._clock = clock
        self._cached: OrderedDict[str, tuple[CatalogVersion, float]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[CatalogVersion]] = {}

    async def get_version(self, name: str, *, authorization: str) -> CatalogVersion:
        """The version (``…/latest`` resolved), or the catalog's error as a HubError."""
        if self._tokens is None:
            return await self._fetch(name, authorization)
        lifetime = self._latest_seconds if name.endswith(_LATEST_SUFFIX) else self._version_seconds
        if lifetime <= 0:
            return await self._fetch(name, f"Bearer {self._tokens.token()}")
        cached = self._cached.get(name)
        if cached is not None:
            if self._clock() < cached[1]:
                return cached[0]
            del self._cached[name]
        pending = self._pending.get(name)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                # the look-up it shared was cancelled with its own caller: look up alone
        future: asyncio.Future[CatalogVersion] = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        try:
            version = await self._fetch(name, f"Bearer {self._tokens.token()}")
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: a look-up nobody shared must not warn
            raise
        else:
            future.set_result(version)
            self._cached[name] = (version, self._clock() + lifetime)
            if len(self._cached) > MAX_CACHED_VERSIONS:
                self._cached.popitem(last=False)
            return version
        finally:
            if self._pending.get(name) is future:
                del self._pending[name]

    async def _fetch(self, name: str, authorization: str) -> CatalogVersion:
        metadata = (("authorization", authorization),) if authorization else ()
        try:
            version = await self._stub.GetExtensionVersion(
                catalog_service_pb2.GetExtensionVersionRequest(name=name),
                metadata=metadata,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise hub_error_from_rpc(error, backend="catalog") from None
        return mapping.catalog_version_from_proto(version)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
