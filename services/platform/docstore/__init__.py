"""The document store port and its adapters (SQLite, in-memory; Cosmos DB next)."""

from services.platform.docstore.port import (
    Document,
    DocumentCollection,
    DocumentStore,
    Query,
    QueryPage,
)

__all__ = [
    "Document",
    "DocumentCollection",
    "DocumentStore",
    "Query",
    "QueryPage",
]
