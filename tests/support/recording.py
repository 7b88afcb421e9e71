"""A real document collection that remembers the queries it is sent (to ask SQLite for their plans)."""

from __future__ import annotations

from typing import Any

from services.platform.docstore.port import Query, QueryPage
from services.platform.docstore.sqlite import SqliteDocumentCollection


class RecordingCollection:
    """The real collection, remembering every query it is sent."""

    def __init__(self, inner: SqliteDocumentCollection) -> None:
        self.inner = inner
        self.queries: list[Query] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def query(self, query: Query) -> QueryPage:
        self.queries.append(query)
        return await self.inner.query(query)
