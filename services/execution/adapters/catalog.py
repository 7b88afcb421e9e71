"""The catalog port over gRPC: ``CatalogService.GetExtensionVersion`` with the caller's authorization."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from services.execution import mapping
from services.execution.adapters.grpc_errors import hub_error_from_rpc
from services.execution.handlers.ports import CatalogVersion

if TYPE_CHECKING:
    from exthub.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

__all__ = ["CALL_TIMEOUT_SECONDS", "GrpcCatalogClient"]

CALL_TIMEOUT_SECONDS = 10.0


class GrpcCatalogClient:
    """A :class:`~services.execution.handlers.ports.CatalogPort` on one catalog address."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: CatalogServiceAsyncStub = catalog_service_pb2_grpc.CatalogServiceStub(self._channel)

    async def get_version(self, name: str, *, authorization: str) -> CatalogVersion:
        """The version (``…/latest`` resolved), or the catalog's error as a HubError."""
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
