"""Use cases that change extensions: create, update (field mask + etag), soft delete, undelete."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable

from services.catalog.domain.model import (
    MUTABLE_EXTENSION_FIELDS,
    OUTPUT_ONLY_EXTENSION_FIELDS,
    Extension,
    ExtensionState,
)
from services.catalog.domain.rules import (
    Caller,
    ensure_can_modify,
    ensure_etag_matches,
    owner_of,
    validate_extension,
    validate_extension_id,
)
from services.catalog.handlers.context import CatalogContext
from services.platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument


def _new_extension_id() -> str:
    return f"ext-{secrets.token_hex(8)}"


async def create_extension(ctx: CatalogContext, caller: Caller, extension_id: str, draft: Extension) -> Extension:
    """Creates an ACTIVE extension owned by the caller, with a client-chosen or generated id."""
    extension_id = validate_extension_id(extension_id) if extension_id else _new_extension_id()
    validate_extension(draft, fields=MUTABLE_EXTENSION_FIELDS)
    now = ctx.clock()
    extension = dataclasses.replace(
        draft,
        extension_id=extension_id,
        state=ExtensionState.ACTIVE,
        owner=owner_of(caller),
        create_time=now,
        update_time=now,
        delete_time="",
        etag="",
    )
    return await ctx.repository.create_extension(extension)


def resolve_update_mask(paths: Iterable[str]) -> set[str]:
    """The mutable fields an update touches: ``*`` means all; output-only fields are ignored (AIP-134)."""
    resolved: set[str] = set()
    for path in paths:
        if path == "*":
            resolved |= MUTABLE_EXTENSION_FIELDS
        elif path in MUTABLE_EXTENSION_FIELDS:
            resolved.add(path)
        elif path not in OUTPUT_ONLY_EXTENSION_FIELDS:
            raise InvalidArgument.field(
                "update_mask",
                f"unknown or immutable field {path!r}; updatable: {', '.join(sorted(MUTABLE_EXTENSION_FIELDS))}",
            )
    return resolved


async def update_extension(
    ctx: CatalogContext, caller: Caller, patch: Extension, mask_paths: Iterable[str]
) -> Extension:
    """Applies the masked fields of ``patch`` to the stored extension with a conditional write."""
    fields = resolve_update_mask(mask_paths)
    current = await ctx.repository.get_extension(patch.extension_id)
    ensure_can_modify(current, caller)
    ensure_etag_matches(current, patch.etag)
    if current.state is not ExtensionState.ACTIVE:
        raise FailedPrecondition(
            f"{current.name} is deleted; undelete it before updating",
            reason="EXTENSION_NOT_ACTIVE",
            metadata={"resource": current.name},
        )
    validate_extension(patch, fields=fields)
    if not fields:
        return current
    changes = {name: getattr(patch, name) for name in fields}
    updated = dataclasses.replace(current, **changes, update_time=ctx.clock())
    return await ctx.repository.replace_extension(updated, if_match=current.etag)


async def delete_extension(ctx: CatalogContext, caller: Caller, extension_id: str, etag: str) -> Extension:
    """Soft delete (AIP-164): the extension is hidden from lists and can be undeleted."""
    current = await ctx.repository.get_extension(extension_id)
    ensure_can_modify(current, caller)
    ensure_etag_matches(current, etag)
    if current.state is ExtensionState.DELETED:
        raise FailedPrecondition(
            f"{current.name} is already deleted", reason="EXTENSION_NOT_ACTIVE", metadata={"resource": current.name}
        )
    now = ctx.clock()
    deleted = dataclasses.replace(current, state=ExtensionState.DELETED, delete_time=now, update_time=now)
    return await ctx.repository.replace_extension(deleted, if_match=current.etag)


async def undelete_extension(ctx: CatalogContext, caller: Caller, extension_id: str, etag: str) -> Extension:
    """Restores a soft-deleted extension; ALREADY_EXISTS when it is not deleted (AIP-164)."""
    current = await ctx.repository.get_extension(extension_id)
    ensure_can_modify(current, caller)
    ensure_etag_matches(current, etag)
    if current.state is ExtensionState.ACTIVE:
        raise AlreadyExists(
            f"{current.name} is not deleted", reason="EXTENSION_EXISTS", metadata={"resource": current.name}
        )
    restored = dataclasses.replace(current, state=ExtensionState.ACTIVE, delete_time="", update_time=ctx.clock())
    return await ctx.repository.replace_extension(restored, if_match=current.etag)
