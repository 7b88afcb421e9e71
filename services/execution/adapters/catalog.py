"""The catalog port over gRPC: ``CatalogService.GetExtensionVersion``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from exthub.contract.dev_tokens import TokenSource
from services.execution import mapping
from services.execution.adapters.grpc_errors import hub_error_from_rpc
from services.execution.handlers.ports import CatalogVersion

if TYPE_CHECKING:
    from exthub.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

__all__ = ["CALL_TIMEOUT_SECONDS", "GrpcCatalogClient"]

CALL_TIMEOUT_SECONDS = 10.0


class GrpcCatalogClient:
    """A :class:`~services.execution.handlers.ports.CatalogPort` on one catalog address: with the service's own
    token when ``tokens`` is given (the catalog shows a profile's extension settings only to the owner,
    Hub.Admin and the hub's services), else with the caller's ``authorization`` forwarded."""

    def __init__(self, address: str, tokens: TokenSource | None = None) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: CatalogServiceAsyncStub = catalog_service_pb2_grpc.CatalogServiceStub(self._channel)
        self._tokens = tokens

    async def get_version(self, name: str, *, authorization: str) -> CatalogVersion:
        """The version (``…/latest`` resolved), or the catalog's error as a HubError."""
        if self._tokens is not None:
            authorization = f"Bearer {self._tokens.token()}"
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
