"""Use cases that change versions: create (immutable), deprecate, soft delete."""

from __future__ import annotations

import asyncio
import dataclasses

from services.catalog.domain.model import ExtensionVersion, VersionState
from services.catalog.domain.rules import (
    Caller,
    deprecate,
    ensure_can_modify,
    ensure_etag_matches,
    ensure_extension_active,
    validate_version,
)
from services.catalog.domain.versions import parse_version_id
from services.catalog.handlers.context import CatalogContext
from services.platform.egress import is_called_url_setting
from services.platform.errors import FieldViolation, InvalidArgument


async def create_version(
    ctx: CatalogContext, caller: Caller, extension_id: str, version_id: str, draft: ExtensionVersion
) -> ExtensionVersion:
    """Adds an immutable version to an ACTIVE extension the caller owns (or any, for Hub.Admin)."""
    parse_version_id(version_id)
    extension = await ctx.repository.get_extension(extension_id)
    ensure_can_modify(extension, caller)
    ensure_extension_active(extension)
    now = ctx.clock()
    version = dataclasses.replace(
        draft,
        extension_id=extension_id,
        version_id=version_id,
        state=VersionState.ACTIVE,
        create_time=now,
        update_time=now,
        etag="",
        latest=False,
    )
    validate_version(version)
    await _check_egress(ctx, version)
    return await ctx.repository.create_version(version)


async def _check_egress(ctx: CatalogContext, version: ExtensionVersion) -> None:
    """Every URL the hub will call (``extension_settings`` keys ending in ``_url``) passes the egress policy."""
    checks = [
        ctx.egress.registration_violations(f"version.profiles[{index}].extension_settings[{key!r}]", value)
        for index, profile in enumerate(version.profiles)
        for key, value in profile.extension_settings.items()
        if is_called_url_setting(key)
    ]
    violations: list[FieldViolation] = [v for found in await asyncio.gather(*checks) for v in found]
    if violations:
        raise InvalidArgument(
            "the version names an extension URL the hub does not call",
            reason="EGRESS_REFUSED",
            metadata={"field": violations[0].field},
            field_violations=violations,
        )


async def deprecate_version(
    ctx: CatalogContext, caller: Caller, extension_id: str, version_id: str, etag: str
) -> ExtensionVersion:
    """ACTIVE → DEPRECATED: existing executions keep working, new ones are refused."""
    extension = await ctx.repository.get_extension(extension_id)
    ensure_can_modify(extension, caller)
    version = await ctx.repository.get_version(extension_id, version_id)
    ensure_etag_matches(version, etag)
    state = deprecate(version)
    if state is version.state:
        return version
    return await ctx.repository.replace_version_state(version, state, now=ctx.clock(), if_match=version.etag)


async def delete_version(
    ctx: CatalogContext, caller: Caller, extension_id: str, version_id: str, etag: str
) -> ExtensionVersion:
    """Soft delete: the version stays readable by name (DELETED) and its id is never reused."""
    extension = await ctx.repository.get_extension(extension_id)
    ensure_can_modify(extension, caller)
    version = await ctx.repository.get_version(extension_id, version_id)
    ensure_etag_matches(version, etag)
    if version.state is VersionState.DELETED:
        return version
    return await ctx.repository.replace_version_state(
        version, VersionState.DELETED, now=ctx.clock(), if_match=version.etag
    )
