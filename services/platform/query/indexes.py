"""Index declarations a collection's owner hands to the embedded document store at open
(``SqliteDocumentStore.open(indexes=...)``; kept out of the docstore package so a process can declare them without
loading any store).

A key list (``tuple[SortKey, ...]``) is an index over every document of the collection in that order: it serves
that ``order_by`` and the filters on its first key. :class:`Present` is an index of only the documents where a
field holds a value: it serves comparisons on that field (which never match a document without it) and costs
nothing to the documents that lack it (no entry to keep on their writes), but it cannot serve an order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.platform.query.predicate import Path, SortKey

__all__ = ["IndexSpec", "Indexes", "Present"]


@dataclass(frozen=True)
class Present:
    """An index of the documents whose ``path`` holds a value (not missing, not null), by that value."""

    path: Path


IndexSpec = Sequence[SortKey] | Present
#: Per collection, its indexes.
Indexes = Mapping[str, Iterable[IndexSpec]]
