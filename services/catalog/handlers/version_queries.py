"""Use cases that read versions: get (with the ``latest`` alias) and list newest first."""

from __future__ import annotations

from dataclasses import dataclass

from services.catalog.domain.model import ExtensionVersion, VersionState
from services.catalog.domain.rules import Caller, can_see_extension_settings, without_extension_settings
from services.catalog.domain.versions import LATEST_ALIAS, parse_version_id
from services.catalog.handlers.context import CatalogContext
from services.catalog.handlers.schemas import VERSION_FILTER
from services.platform.errors import NotFound
from services.platform.paging import resolve_page_size
from services.platform.query.filter import parse_filter
from services.platform.query.predicate import And, Compare, Op, Predicate


@dataclass(frozen=True)
class VersionPage:
    """A page of versions plus the token for the next one (empty at the end)."""

    versions: list[ExtensionVersion]
    next_page_token: str


async def get_version(
    ctx: CatalogContext, caller: Caller | None, extension_id: str, version_id: str
) -> ExtensionVersion:
    """One version; ``latest`` resolves to the highest ACTIVE non-prerelease version. Its profiles'
    extension settings are shown only to the owner, a Hub.Admin and the hub's services."""
    extension = await ctx.repository.get_extension(extension_id)
    if version_id == LATEST_ALIAS:
        latest = await ctx.repository.latest_version_id(extension_id)
        if latest is None:
            name = f"extensions/{extension_id}/versions/{LATEST_ALIAS}"
            raise NotFound(
                f"extensions/{extension_id} has no active released version",
                reason="VERSION_NOT_FOUND",
                metadata={"resource": name},
            )
        version_id = latest
    else:
        parse_version_id(version_id, field="name")
    version = await ctx.repository.get_version(extension_id, version_id)
    return version if can_see_extension_settings(extension, caller) else without_extension_settings(version)


async def list_versions(
    ctx: CatalogContext,
    caller: Caller | None,
    extension_id: str,
    *,
    filter_text: str,
    show_deleted: bool,
    page_size: int,
    page_token: str,
) -> VersionPage:
    """An extension's versions, newest first by semantic-version precedence (extension settings as in
    :func:`get_version`)."""
    limit = resolve_page_size(page_size)
    extension = await ctx.repository.get_extension(extension_id)
    where: Predicate | None = parse_filter(filter_text, VERSION_FILTER)
    if not show_deleted:
        not_deleted = Compare(("state",), Op.NE, VersionState.DELETED.value)
        where = not_deleted if where is None else And((not_deleted, where))
    query_args = {"parent": extension_id, "filter": filter_text, "show_deleted": show_deleted}
    continuation = ctx.page_tokens.decode(page_token, query=query_args)["continuation"] if page_token else None
    page = await ctx.repository.list_versions(extension_id, where=where, limit=limit, continuation=continuation)
    next_token = (
        ctx.page_tokens.encode({"continuation": page.continuation}, query=query_args) if page.continuation else ""
    )
    versions = page.items
    if not can_see_extension_settings(extension, caller):
        versions = [without_extension_settings(version) for version in versions]
    return VersionPage(versions, next_token)
