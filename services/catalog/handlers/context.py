"""What every catalog use case needs: persistence, search, page tokens and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from services.catalog.repository import CatalogRepository
from services.catalog.search import ExtensionSearchIndex
from services.platform.egress import EgressPolicy
from services.platform.paging import PageTokenCodec
from services.platform.timefmt import to_storage, utcnow


def _now() -> str:
    return to_storage(utcnow())


@dataclass(frozen=True)
class CatalogContext:
    """Dependencies of the catalog's command and query handlers."""

    repository: CatalogRepository
    search_index: ExtensionSearchIndex
    page_tokens: PageTokenCodec
    clock: Callable[[], str] = _now
    #: checks the URLs of a new version's extension settings (no allow-list unless configured)
    egress: EgressPolicy = field(default_factory=EgressPolicy)
