"""Catalog persistence over the document store port (any backend that passes the port's contract)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from services.catalog.adapters.documents import (
    EXTENSION_DOC_ID,
    KIND_EXTENSION,
    KIND_VERSION,
    extension_from_document,
    extension_to_body,
    version_doc_id,
    version_from_document,
    version_to_body,
)
from services.catalog.domain.model import Extension, ExtensionVersion, VersionState
from services.platform.docstore.port import DocumentCollection, Query
from services.platform.errors import Aborted, AlreadyExists, NotFound
from services.platform.query.predicate import And, Compare, Op, Predicate, SortKey

_KIND = ("kind",)
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the store's continuation for the next one."""

    items: list[T]
    continuation: str | None


def _with_kind(kind: str, where: Predicate | None) -> Predicate:
    kind_is = Compare(_KIND, Op.EQ, kind)
    return kind_is if where is None else And((kind_is, where))


class CatalogRepository:
    """Reads and writes extensions and versions; maps store errors to catalog reasons."""

    def __init__(self, collection: DocumentCollection) -> None:
        self._collection = collection

    async def create_extension(self, extension: Extension) -> Extension:
        """Stores a new extension; ALREADY_EXISTS when the id is taken."""
        try:
            document = await self._collection.create(
                extension.extension_id, EXTENSION_DOC_ID, extension_to_body(extension)
            )
        except AlreadyExists:
            raise AlreadyExists(
                f"{extension.name} already exists", reason="EXTENSION_EXISTS", metadata={"resource": extension.name}
            ) from None
        return extension_from_document(document)

    async def find_extension(self, extension_id: str) -> Extension | None:
        """The extension, or None."""
        document = await self._collection.read(extension_id, EXTENSION_DOC_ID)
        return None if document is None else extension_from_document(document)

    async def get_extension(self, extension_id: str) -> Extension:
        """The extension, or NOT_FOUND (EXTENSION_NOT_FOUND)."""
        extension = await self.find_extension(extension_id)
        if extension is None:
            name = f"extensions/{extension_id}"
            raise NotFound(f"{name} not found", reason="EXTENSION_NOT_FOUND", metadata={"resource": name})
        return extension

    async def replace_extension(self, extension: Extension, *, if_match: str) -> Extension:
        """Conditional write: ABORTED (ETAG_MISMATCH) when someone else changed it first."""
        try:
            document = await self._collection.replace(
                extension.extension_id, EXTENSION_DOC_ID, extension_to_body(extension), if_match=if_match
            )
        except NotFound:
            raise NotFound(
                f"{extension.name} not found", reason="EXTENSION_NOT_FOUND", metadata={"resource": extension.name}
            ) from None
        except Aborted:
            raise Aborted(
                f"{extension.name} was changed concurrently; read it again and retry",
                reason="ETAG_MISMATCH",
                metadata={"resource": extension.name},
            ) from None
        return extension_from_document(document)

    async def list_extensions(
        self, *, where: Predicate | None, order_by: tuple[SortKey, ...], limit: int, continuation: str | None
    ) -> Page[Extension]:
        """A page of extensions across partitions."""
        page = await self._collection.query(
            Query(where=_with_kind(KIND_EXTENSION, where), order_by=order_by, limit=limit, continuation=continuation)
        )
        return Page([extension_from_document(d) for d in page.documents], page.continuation)

    async def count_extensions(self, *, where: Predicate | None) -> int:
        """How many extensions match."""
        return await self._collection.count(where=_with_kind(KIND_EXTENSION, where))

    async def create_version(self, version: ExtensionVersion) -> ExtensionVersion:
        """Stores a new version; ALREADY_EXISTS (VERSION_EXISTS) when it exists, even deleted."""
        try:
            document = await self._collection.create(
                version.extension_id, version_doc_id(version.version_id), version_to_body(version)
            )
        except AlreadyExists:
            raise AlreadyExists(
                f"{version.name} already exists; versions are immutable",
                reason="VERSION_EXISTS",
                metadata={"resource": version.name},
            ) from None
        latest = await self.latest_version_id(version.extension_id)
        return version_from_document(document, latest_version_id=latest)

    async def get_version(self, extension_id: str, version_id: str) -> ExtensionVersion:
        """The version, or NOT_FOUND (VERSION_NOT_FOUND)."""
        document = await self._collection.read(extension_id, version_doc_id(version_id))
        if document is None:
            name = f"extensions/{extension_id}/versions/{version_id}"
            raise NotFound(f"{name} not found", reason="VERSION_NOT_FOUND", metadata={"resource": name})
        return version_from_document(document, latest_version_id=await self.latest_version_id(extension_id))

    async def replace_version_state(
        self, version: ExtensionVersion, state: VersionState, *, now: str, if_match: str
    ) -> ExtensionVersion:
        """Changes only the lifecycle state of a version (the rest is immutable)."""
        body = version_to_body(version)
        body["state"] = state.value
        body["update_time"] = now
        if state is VersionState.DELETED:
            body["delete_time"] = now
        try:
            document = await self._collection.replace(
                version.extension_id, version_doc_id(version.version_id), body, if_match=if_match
            )
        except Aborted:
            raise Aborted(
                f"{version.name} was changed concurrently; read it again and retry",
                reason="ETAG_MISMATCH",
                metadata={"resource": version.name},
            ) from None
        latest = await self.latest_version_id(version.extension_id)
        return version_from_document(document, latest_version_id=latest)

    async def list_versions(
        self, extension_id: str, *, where: Predicate | None, limit: int, continuation: str | None
    ) -> Page[ExtensionVersion]:
        """A page of one extension's versions, newest first by semantic-version precedence."""
        page = await self._collection.query(
            Query(
                partition=extension_id,
                where=_with_kind(KIND_VERSION, where),
                order_by=(SortKey(("semver_key",), descending=True),),
                limit=limit,
                continuation=continuation,
            )
        )
        latest = await self.latest_version_id(extension_id)
        return Page([version_from_document(d, latest_version_id=latest) for d in page.documents], page.continuation)

    async def latest_version_id(self, extension_id: str) -> str | None:
        """The highest ACTIVE version that is not a prerelease, or None."""
        where = And(
            (
                Compare(_KIND, Op.EQ, KIND_VERSION),
                Compare(("state",), Op.EQ, VersionState.ACTIVE.value),
                Compare(("prerelease",), Op.EQ, False),
            )
        )
        page = await self._collection.query(
            Query(
                partition=extension_id,
                where=where,
                order_by=(SortKey(("semver_key",), descending=True),),
                limit=1,
            )
        )
        return page.documents[0].body["version_id"] if page.documents else None
