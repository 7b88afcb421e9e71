"""Use cases that read extensions: get, list (AIP-160 filter, order_by, show_deleted) and search."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.catalog.domain.model import Extension, ExtensionState
from services.catalog.handlers.context import CatalogContext
from services.catalog.handlers.schemas import EXTENSION_FILTER, EXTENSION_ORDER
from services.catalog.search import FacetValue
from services.platform.errors import InvalidArgument
from services.platform.paging import resolve_page_size
from services.platform.query.filter import parse_filter, parse_order_by
from services.platform.query.predicate import And, Compare, Op, Predicate, SortKey

MAX_QUERY_LENGTH = 500
_DEFAULT_ORDER = (SortKey(("extension_id",), descending=False),)


@dataclass(frozen=True)
class ExtensionPage:
    """A page of extensions plus the token for the next one (empty at the end)."""

    extensions: list[Extension]
    next_page_token: str
    total_size: int
    facets: dict[str, list[FacetValue]] = field(default_factory=dict)


def _active_only(where: Predicate | None) -> Predicate:
    active = Compare(("state",), Op.EQ, ExtensionState.ACTIVE.value)
    return active if where is None else And((active, where))


async def get_extension(ctx: CatalogContext, extension_id: str) -> Extension:
    """One extension, deleted ones included (they carry ``delete_time``)."""
    return await ctx.repository.get_extension(extension_id)


async def list_extensions(
    ctx: CatalogContext, *, filter_text: str, order_by: str, show_deleted: bool, page_size: int, page_token: str
) -> ExtensionPage:
    """Lists extensions; the page token is bound to the filter, order and show_deleted."""
    limit = resolve_page_size(page_size)
    where = parse_filter(filter_text, EXTENSION_FILTER)
    if not show_deleted:
        where = _active_only(where)
    order = tuple(parse_order_by(order_by, EXTENSION_ORDER)) or _DEFAULT_ORDER
    query_args = {"filter": filter_text, "order_by": order_by, "show_deleted": show_deleted, "kind": "list"}
    continuation = None
    if page_token:
        continuation = ctx.page_tokens.decode(page_token, query=query_args)["continuation"]
    page = await ctx.repository.list_extensions(where=where, order_by=order, limit=limit, continuation=continuation)
    total = await ctx.repository.count_extensions(where=where)
    next_token = (
        ctx.page_tokens.encode({"continuation": page.continuation}, query=query_args) if page.continuation else ""
    )
    return ExtensionPage(page.items, next_token, total)


async def search_extensions(
    ctx: CatalogContext, *, query: str, filter_text: str, page_size: int, page_token: str
) -> ExtensionPage:
    """Full-text search over ACTIVE extensions, ranked, with facets over every match."""
    if len(query) > MAX_QUERY_LENGTH:
        raise InvalidArgument.field("query", f"at most {MAX_QUERY_LENGTH} characters")
    limit = resolve_page_size(page_size)
    where = _active_only(parse_filter(filter_text, EXTENSION_FILTER))
    query_args = {"query": query, "filter": filter_text, "kind": "search"}
    offset = 0
    if page_token:
        offset = int(ctx.page_tokens.decode(page_token, query=query_args)["offset"])
    hits = await ctx.search_index.search(query, where=where, limit=limit, offset=offset)
    next_offset = offset + len(hits.extensions)
    next_token = (
        ctx.page_tokens.encode({"offset": next_offset}, query=query_args) if next_offset < hits.total_size else ""
    )
    return ExtensionPage(hits.extensions, next_token, hits.total_size, hits.facets)
