"""The search index port: full-text ranking and facets over extensions (``SearchExtensions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from services.catalog.domain.model import Extension
from services.platform.query.predicate import Predicate

FACET_FIELDS: tuple[str, ...] = ("category", "publisher", "tags")


@dataclass(frozen=True)
class FacetValue:
    """One value of a facet and how many matching extensions have it."""

    value: str
    count: int


@dataclass(frozen=True)
class SearchHits:
    """One page of extensions in rank order, the total number of matches, and facets over all of them."""

    extensions: list[Extension]
    total_size: int
    facets: dict[str, list[FacetValue]] = field(default_factory=dict)


class ExtensionSearchIndex(Protocol):
    """Ranks extensions for a free-text query: a match in the id or display name ranks above a match in
    the tags, which ranks above a match in the description; facets count the whole matching set. The
    index returns its own copies of the extensions (kept current from the store), so a page needs no
    further reads."""

    async def search(self, text: str, *, where: Predicate | None, limit: int, offset: int) -> SearchHits:
        """One page of ranked hits (``offset`` comes from the caller's signed page token)."""
        ...

    async def close(self) -> None:
        """Releases the index's resources."""
        ...
