"""The gRPC edge of the catalog: translates protos to use-case calls and back, nothing else."""

from __future__ import annotations

import grpc

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from exthub.catalog.v1 import resources_pb2
from services.catalog import mapping
from services.catalog.handlers import (
    extension_commands,
    extension_queries,
    version_commands,
    version_queries,
)
from services.catalog.handlers.context import CatalogContext
from services.platform.auth.access import current_principal, require_principal

Context = grpc.aio.ServicerContext[object, object]


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    """Implements ``exthub.catalog.v1.CatalogService``."""

    def __init__(self, ctx: CatalogContext) -> None:
        self._ctx = ctx
        self._search_messages = mapping.ExtensionMessages(
            pb.SearchExtensionsResponse.DESCRIPTOR.fields_by_name["extensions"]
        )

    async def CreateExtension(self, request: pb.CreateExtensionRequest, context: Context) -> resources_pb2.Extension:
        draft = mapping.extension_from_proto(request.extension)
        created = await extension_commands.create_extension(self._ctx, require_principal(), request.extension_id, draft)
        return mapping.extension_to_proto(created)

    async def GetExtension(self, request: pb.GetExtensionRequest, context: Context) -> resources_pb2.Extension:
        extension_id = mapping.parse_extension_name(request.name)
        return mapping.extension_to_proto(await extension_queries.get_extension(self._ctx, extension_id))

    async def ListExtensions(self, request: pb.ListExtensionsRequest, context: Context) -> pb.ListExtensionsResponse:
        page = await extension_queries.list_extensions(
            self._ctx,
            filter_text=request.filter,
            order_by=request.order_by,
            show_deleted=request.show_deleted,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListExtensionsResponse(
            extensions=[mapping.extension_to_proto(e) for e in page.extensions],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def SearchExtensions(
        self, request: pb.SearchExtensionsRequest, context: Context
    ) -> pb.SearchExtensionsResponse:
        page = await extension_queries.search_extensions(
            self._ctx,
            query=request.query,
            filter_text=request.filter,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        response = pb.SearchExtensionsResponse(
            facets=mapping.facets_to_proto(page.facets),
            total_size=page.total_size,
            next_page_token=page.next_page_token,
        )
        self._search_messages.merge_into(response, page.extensions)
        return response

    async def UpdateExtension(self, request: pb.UpdateExtensionRequest, context: Context) -> resources_pb2.Extension:
        extension_id = mapping.parse_extension_name(request.extension.name, field="extension.name")
        patch = mapping.extension_from_proto(request.extension, extension_id=extension_id)
        paths = (
            list(request.update_mask.paths)
            if request.HasField("update_mask") and request.update_mask.paths
            else mapping.populated_extension_fields(request.extension)
        )
        updated = await extension_commands.update_extension(self._ctx, require_principal(), patch, paths)
        return mapping.extension_to_proto(updated)

    async def DeleteExtension(self, request: pb.DeleteExtensionRequest, context: Context) -> resources_pb2.Extension:
        extension_id = mapping.parse_extension_name(request.name)
        deleted = await extension_commands.delete_extension(self._ctx, require_principal(), extension_id, request.etag)
        return mapping.extension_to_proto(deleted)

    async def UndeleteExtension(
        self, request: pb.UndeleteExtensionRequest, context: Context
    ) -> resources_pb2.Extension:
        extension_id = mapping.parse_extension_name(request.name)
        restored = await extension_commands.undelete_extension(
            self._ctx, require_principal(), extension_id, request.etag
        )
        return mapping.extension_to_proto(restored)

    async def CreateExtensionVersion(
        self, request: pb.CreateExtensionVersionRequest, context: Context
    ) -> resources_pb2.ExtensionVersion:
        extension_id = mapping.parse_extension_name(request.parent, field="parent")
        draft = mapping.version_from_proto(request.version)
        created = await version_commands.create_version(
            self._ctx, require_principal(), extension_id, request.version_id, draft
        )
        return mapping.version_to_proto(created)

    async def GetExtensionVersion(
        self, request: pb.GetExtensionVersionRequest, context: Context
    ) -> resources_pb2.ExtensionVersion:
        extension_id, version_id = mapping.parse_version_name(request.name)
        version = await version_queries.get_version(self._ctx, current_principal(), extension_id, version_id)
        return mapping.version_to_proto(version)

    async def ListExtensionVersions(
        self, request: pb.ListExtensionVersionsRequest, context: Context
    ) -> pb.ListExtensionVersionsResponse:
        extension_id = mapping.parse_extension_name(request.parent, field="parent")
        page = await version_queries.list_versions(
            self._ctx,
            current_principal(),
            extension_id,
            filter_text=request.filter,
            show_deleted=request.show_deleted,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListExtensionVersionsResponse(
            versions=[mapping.version_to_proto(v) for v in page.versions], next_page_token=page.next_page_token
        )

    async def DeprecateExtensionVersion(
        self, request: pb.DeprecateExtensionVersionRequest, context: Context
    ) -> resources_pb2.ExtensionVersion:
        extension_id, version_id = mapping.parse_version_name(request.name)
        version = await version_commands.deprecate_version(
            self._ctx, require_principal(), extension_id, version_id, request.etag
        )
        return mapping.version_to_proto(version)

    async def DeleteExtensionVersion(
        self, request: pb.DeleteExtensionVersionRequest, context: Context
    ) -> resources_pb2.ExtensionVersion:
        extension_id, version_id = mapping.parse_version_name(request.name)
        version = await version_commands.delete_version(
            self._ctx, require_principal(), extension_id, version_id, request.etag
        )
        return mapping.version_to_proto(version)
