"""The catalog, as the execution service sees it: resolve an extension version over gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import grpc

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc, resources_pb2
from services.execution.adapters.agent import TokenSource
from services.execution.adapters.grpc_errors import hub_error_from_rpc

if TYPE_CHECKING:
    from exthub.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

Metadata = Sequence[tuple[str, str]]
CALL_TIMEOUT_SECONDS = 10.0


class CatalogPort(Protocol):
    """Reads extension versions (``…/versions/latest`` resolved by the catalog)."""

    async def get_version(self, name: str, *, metadata: Metadata) -> resources_pb2.ExtensionVersion:
        """The version, or the catalog's error (NOT_FOUND VERSION_NOT_FOUND …) as a HubError."""
        ...


class GrpcCatalogClient:
    """``CatalogService.GetExtensionVersion``, with the service's own token when ``tokens`` is given (the
    catalog shows a profile's extension settings only to the owner, Hub.Admin and the hub's services), else
    with the caller's ``authorization`` forwarded."""

    def __init__(self, address: str, tokens: TokenSource | None = None) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: CatalogServiceAsyncStub = catalog_service_pb2_grpc.CatalogServiceStub(self._channel)
        self._tokens = tokens

    async def get_version(self, name: str, *, metadata: Metadata) -> resources_pb2.ExtensionVersion:
        if self._tokens is not None:
            metadata = [
                *((key, value) for key, value in metadata if key.lower() != "authorization"),
                ("authorization", f"Bearer {self._tokens.token()}"),
            ]
        try:
            return await self._stub.GetExtensionVersion(
                catalog_service_pb2.GetExtensionVersionRequest(name=name),
                metadata=tuple(metadata),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise hub_error_from_rpc(error, backend="catalog") from None

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
