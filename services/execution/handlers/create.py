"""CreateExecution (idempotent with a ``request_id``) and RetryExecution."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from exthub.catalog.v1 import resources_pb2
from exthub.type.v1 import types_pb2
from services.execution import mapping
from services.execution.domain import ExecutionState, create, is_terminal, new_status_key
from services.execution.domain.scheduling import due_time
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.run import run_sync
from services.execution.handlers.support import expire_time, load_visible, timeouts_of
from services.execution.model import MODE_ASYNC, MODE_DIRECT, MODE_SYNC, StoredExecution, set_dispatch
from services.platform.auth.principal import Principal
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.query.filter import MAP_KEY_RE
from services.platform.timefmt import from_storage

MAX_REQUEST_BYTES = 256 * 1024
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_PROFILE_CHARS = 63
DEDUP_WAIT_SECONDS = 5.0
Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class ExecutionDraft:
    """The client's part of a new execution."""

    extension_version: str
    profile: str = "default"
    priority: str = "NORMAL"
    validate_only: bool = False
    request: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    request_bytes: int = 0


def validate_draft(draft: ExecutionDraft) -> None:
    """Size and shape limits: INVALID_ARGUMENT with the offending field."""
    mapping.parse_version_name(draft.extension_version)
    if not draft.profile or len(draft.profile) > MAX_PROFILE_CHARS:
        raise InvalidArgument.field("execution.profile", f"must have 1 to {MAX_PROFILE_CHARS} characters")
    if draft.request_bytes > MAX_REQUEST_BYTES:
        raise InvalidArgument.field("execution.request", f"must be at most {MAX_REQUEST_BYTES} bytes")
    if len(draft.labels) > MAX_LABELS:
        raise InvalidArgument.field("execution.labels", f"at most {MAX_LABELS} labels")
    for key, value in draft.labels.items():
        if not MAP_KEY_RE.fullmatch(key):
            raise InvalidArgument.field(f"execution.labels.{key}", "keys must match ^[a-z][a-z0-9_.-]{0,62}$")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidArgument.field(f"execution.labels.{key}", f"at most {MAX_LABEL_VALUE_CHARS} characters")


def _mode_of(profile: resources_pb2.ExecutionProfile) -> str:
    if profile.mode == resources_pb2.ExecutionProfile.DIRECT:
        return MODE_DIRECT
    if profile.execution_model.endswith("/sync/v1"):
        return MODE_SYNC
    if profile.execution_model.endswith("/async/v1"):
        return MODE_ASYNC
    raise FailedPrecondition(
        f"the execution model {profile.execution_model!r} is not supported",
        reason="EXECUTION_MODEL_NOT_SUPPORTED",
        metadata={"executionModel": profile.execution_model},
    )


def _check_version(version: resources_pb2.ExtensionVersion, draft: ExecutionDraft) -> resources_pb2.ExecutionProfile:
    if version.state != resources_pb2.ExtensionVersion.ACTIVE:
        raise FailedPrecondition(
            f"{version.name} is {resources_pb2.ExtensionVersion.State.Name(version.state)}",
            reason="VERSION_NOT_ACTIVE",
            metadata={"resource": version.name},
        )
    profile = next((p for p in version.profiles if p.name == draft.profile), None)
    if profile is None:
        raise InvalidArgument.field("execution.profile", f"{version.name} has no profile {draft.profile!r}")
    if profile.HasField("active") and not profile.active:
        raise FailedPrecondition(
            f"the profile {draft.profile!r} is not active",
            reason="PROFILE_NOT_ACTIVE",
            metadata={"profile": draft.profile},
        )
    supported = {types_pb2.Priority.Name(p) for p in profile.supported_priorities}
    if draft.priority not in supported:
        raise FailedPrecondition(
            f"the profile {draft.profile!r} does not support priority {draft.priority}",
            reason="PRIORITY_NOT_SUPPORTED",
            metadata={"priority": draft.priority, "supported": ",".join(sorted(supported))},
        )
    if draft.validate_only and not version.supports_validation:
        raise FailedPrecondition(
            f"{version.name} does not support validation",
            reason="VALIDATION_NOT_SUPPORTED",
            metadata={"resource": version.name},
        )
    return profile


async def create_execution(
    ctx: ExecutionContext,
    principal: Principal,
    draft: ExecutionDraft,
    *,
    request_id: str,
    metadata: Metadata,
    caller_remaining: float | None,
    retried_from: str = "",
) -> StoredExecution:
    """Create (and for sync profiles run) an execution; the same ``request_id`` within 24 h → the same one."""
    validate_draft(draft)
    execution_id = mapping.new_execution_id()
    if request_id:
        request_id = mapping.validate_request_id(request_id)
        existing = await ctx.repository.claim_request_id(principal.tenant, request_id, execution_id, now=ctx.clock())
        if existing is not None:
            return await _existing(ctx, principal, existing)
    try:
        version = await ctx.catalog.get_version(draft.extension_version, metadata=metadata)
        profile = _check_version(version, draft)
        mode = _mode_of(profile)
    except BaseException:
        if request_id:
            await ctx.repository.release_request_id(principal.tenant, request_id, execution_id)
        raise
    return await _store_and_start(
        ctx, principal, draft, execution_id, version, profile, mode, caller_remaining, retried_from
    )


async def _existing(ctx: ExecutionContext, principal: Principal, execution_id: str) -> StoredExecution:
    """The execution a repeated request id points at (it may still be being stored by the first call)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEDUP_WAIT_SECONDS
    while True:
        found = await ctx.repository.find(execution_id)
        if found is not None:
            return await load_visible(ctx, principal, execution_id)
        if loop.time() >= give_up:
            raise FailedPrecondition(
                "a create with this request_id is still in progress or failed; try again",
                reason="REQUEST_IN_PROGRESS",
            )
        await ctx.repository.notifier.wait(execution_id, 0.2)


async def _store_and_start(
    ctx: ExecutionContext,
    principal: Principal,
    draft: ExecutionDraft,
    execution_id: str,
    version: resources_pb2.ExtensionVersion,
    profile: resources_pb2.ExecutionProfile,
    mode: str,
    caller_remaining: float | None,
    retried_from: str,
) -> StoredExecution:
    now = ctx.clock()
    snapshot = mapping.version_snapshot(version, profile)
    extension_id, _ = mapping.parse_version_name(version.name, field="extension_version")
    has_inputs = bool(snapshot["inputs"]) and mode != MODE_DIRECT
    if mode == MODE_DIRECT:
        initial = ExecutionState.DIRECT_TOKEN_ISSUED
    elif has_inputs:
        initial = ExecutionState.PENDING_INPUTS
    elif mode == MODE_SYNC:
        initial = ExecutionState.RUNNING
    else:
        initial = ExecutionState.QUEUED
    record, event = create(initial, now=now, status_message=_initial_message(initial))
    status_key = ""
    body: dict[str, Any] = {
        **record.to_document(),
        "extension_version": version.name,
        "extension": f"extensions/{extension_id}",
        "profile": draft.profile,
        "priority": draft.priority,
        "validate_only": draft.validate_only,
        "request": draft.request,
        "labels": draft.labels,
        "mode": mode,
        "execution_model": profile.execution_model,
        "tenant": principal.tenant,
        "created_by": principal.user,
        "retried_from": retried_from,
        "version": snapshot,
        "inputs": [{"name": d["name"], "required": d["required"], "provided": False} for d in snapshot["inputs"]]
        if mode != MODE_DIRECT
        else [],
        "outputs": [{"name": d["name"], "provided": False} for d in snapshot["outputs"]] if mode != MODE_DIRECT else [],
        "result": None,
        "validation_errors": [],
        "error": None,
        "status_key_hash": "",
        "cancel_requested": False,
        "cancel_deadline": None,
        "direct_token": "",
        "end_time": None,
        "input_timeout_seconds": ctx.input_timeout.total_seconds(),
    }
    if initial is ExecutionState.QUEUED:
        set_dispatch(body, record.attempt)
    if initial is ExecutionState.RUNNING:
        status_key, body["status_key_hash"] = new_status_key()
    if initial is ExecutionState.DIRECT_TOKEN_ISSUED:
        ttl = snapshot["profile"]["direct_token_ttl_seconds"] or 300.0
        body["direct_token"] = ctx.signing.issue_direct_token(
            execution=f"executions/{execution_id}",
            extension=f"extensions/{extension_id}",
            version=version.name,
            profile=draft.profile,
            tenant=principal.tenant,
            user=principal.user,
            audience=f"extensions/{extension_id}",
            ttl_seconds=max(1, int(ttl)),
            now=from_storage(now),
        )
        body["end_time"] = now
    body["expire_time"] = None if is_terminal(initial) else expire_time(record, body)
    body["due_time"] = due_time(record, timeouts_of(body), cancel_deadline_at=None)
    stored = await ctx.repository.create(execution_id, body, event)
    if initial is ExecutionState.RUNNING:
        return await run_sync(ctx, stored, status_key=status_key, caller_remaining=caller_remaining)
    return stored


def _initial_message(state: ExecutionState) -> str:
    return {
        ExecutionState.PENDING_INPUTS: "waiting for inputs",
        ExecutionState.QUEUED: "queued",
        ExecutionState.RUNNING: "running",
        ExecutionState.DIRECT_TOKEN_ISSUED: "direct token issued",
    }[state]


def draft_of(stored: StoredExecution) -> ExecutionDraft:
    """The client's part of a stored execution (for :func:`retry_execution`)."""
    return ExecutionDraft(
        extension_version=str(stored.get("extension_version")),
        profile=str(stored.get("profile")),
        priority=str(stored.get("priority")),
        validate_only=bool(stored.get("validate_only")),
        request=dict(stored.get("request") or {}),
        labels=dict(stored.get("labels") or {}),
    )


async def retry_execution(
    ctx: ExecutionContext,
    principal: Principal,
    execution_id: str,
    *,
    request_id: str,
    metadata: Metadata,
    caller_remaining: float | None,
) -> StoredExecution:
    """A new execution with the same request and ``retried_from``; only from a terminal state."""
    original = await load_visible(ctx, principal, execution_id)
    if not is_terminal(original.state):
        raise FailedPrecondition(
            f"{original.name} is {original.state.value}; only a terminal execution can be retried",
            reason="EXECUTION_NOT_TERMINAL",
            metadata={"resource": original.name, "state": original.state.value},
        )
    return await create_execution(
        ctx,
        principal,
        draft_of(original),
        request_id=request_id,
        metadata=metadata,
        caller_remaining=caller_remaining,
        retried_from=original.name,
    )
