"""The document store port and its adapters (SQLite now, Cosmos DB later)."""

from services.platform.docstore.port import (
    CreateOp,
    DeleteOp,
    Document,
    DocumentCollection,
    DocumentStore,
    Query,
    QueryPage,
    ReplaceOp,
    WriteOp,
)

__all__ = [
    "CreateOp",
    "DeleteOp",
    "Document",
    "DocumentCollection",
    "DocumentStore",
    "Query",
    "QueryPage",
    "ReplaceOp",
    "WriteOp",
]
