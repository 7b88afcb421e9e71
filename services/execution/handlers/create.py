"""CreateExecution and RetryExecution.

Which profile: the one the request names; else ``default`` when the version has it; else the version's only
profile; else INVALID_ARGUMENT on ``execution.profile``. Where it starts: DIRECT_TOKEN_ISSUED (a DIRECT
profile); PENDING_INPUTS when it waits for inputs — every *required* input, and each optional one the request
names in ``expected_inputs``; otherwise RUNNING (sync, run now) or QUEUED (async), optional inputs absent.
The same ``request_id`` within 24 h returns the same execution (or, when the create that held it died with its
process before storing anything, makes it: see :func:`_hold_request_id`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.execution.domain import ExecutionState, create, is_terminal, new_status_key
from services.execution.domain.model import (
    DispatchMarker,
    Execution,
    ExecutionRequest,
    InputState,
    Outbox,
    OutputState,
    Priority,
    ProfileSnapshot,
    VersionState,
    inputs_to_wait_for,
)
from services.execution.domain.modes import Mode, mode_of
from services.execution.domain.names import new_execution_id, parse_version_name, validate_request_id
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.ports import CatalogVersion
from services.execution.handlers.queries import wait_for_end, wait_seconds
from services.execution.handlers.run import run_sync
from services.execution.handlers.support import load_visible
from services.platform.auth.principal import Principal
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.logging import get_logger
from services.platform.query.filter import MAP_KEY_RE

__all__ = ["DEFAULT_PROFILE", "ExecutionDraft", "create_execution", "retry_execution", "validate_draft"]

_log = get_logger("exthub.execution.create")

MAX_REQUEST_BYTES = 256 * 1024
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_PROFILE_CHARS = 63
DEDUP_WAIT_SECONDS = 5.0
DEFAULT_PROFILE = "default"
#: A direct token's lifetime when the profile names none (the catalog requires one for DIRECT profiles).
DEFAULT_DIRECT_TOKEN_TTL = timedelta(minutes=5)
_INITIAL_MESSAGES = {
    ExecutionState.PENDING_INPUTS: "waiting for inputs",
    ExecutionState.QUEUED: "queued",
    ExecutionState.RUNNING: "running",
    ExecutionState.DIRECT_TOKEN_ISSUED: "direct token issued",
}


@dataclass(frozen=True)
class ExecutionDraft:
    """The client's part of a new execution (``profile`` empty: not named)."""

    extension_version: str
    profile: str = ""
    priority: Priority = Priority.NORMAL
    validate_only: bool = False
    request: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    expected_inputs: tuple[str, ...] = ()
    request_bytes: int = 0


def validate_draft(draft: ExecutionDraft) -> None:
    """Size and shape limits: INVALID_ARGUMENT with the offending field."""
    parse_version_name(draft.extension_version)
    if draft.profile and len(draft.profile) > MAX_PROFILE_CHARS:
        raise InvalidArgument.field("execution.profile", f"must have at most {MAX_PROFILE_CHARS} characters")
    if draft.request_bytes > MAX_REQUEST_BYTES:
        raise InvalidArgument.field("execution.request", f"must be at most {MAX_REQUEST_BYTES} bytes")
    if len(draft.labels) > MAX_LABELS:
        raise InvalidArgument.field("execution.labels", f"at most {MAX_LABELS} labels")
    for key, value in draft.labels.items():
        if not MAP_KEY_RE.fullmatch(key):
            raise InvalidArgument.field(f"execution.labels.{key}", "keys must match ^[a-z][a-z0-9_.-]{0,62}$")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidArgument.field(f"execution.labels.{key}", f"at most {MAX_LABEL_VALUE_CHARS} characters")


def choose_profile(version: CatalogVersion, requested: str) -> ProfileSnapshot:
    """The profile an execution runs with (see the module docstring)."""
    if requested:
        profile = version.profile(requested)
        if profile is None:
            raise InvalidArgument.field("execution.profile", f"{version.name} has no profile {requested!r}")
        return profile
    default = version.profile(DEFAULT_PROFILE)
    if default is not None:
        return default
    if len(version.profiles) == 1:
        return version.profiles[0]
    names = ", ".join(sorted(p.name for p in version.profiles)) or "none"
    raise InvalidArgument.field(
        "execution.profile", f"is required: {version.name} has no profile {DEFAULT_PROFILE!r} (profiles: {names})"
    )


def _check_version(version: CatalogVersion, draft: ExecutionDraft, object_provider: str) -> ProfileSnapshot:
    if version.state is not VersionState.ACTIVE:
        raise FailedPrecondition(
            f"{version.name} is {version.state.value}",
            reason="VERSION_NOT_ACTIVE",
            metadata={"resource": version.name},
        )
    profile = choose_profile(version, draft.profile)
    if not profile.active:
        raise FailedPrecondition(
            f"the profile {profile.name!r} is not active",
            reason="PROFILE_NOT_ACTIVE",
            metadata={"profile": profile.name},
        )
    if draft.priority not in profile.supported_priorities:
        supported = ",".join(sorted(p.name for p in profile.supported_priorities))
        raise FailedPrecondition(
            f"the profile {profile.name!r} does not support priority {draft.priority.name}",
            reason="PRIORITY_NOT_SUPPORTED",
            metadata={"priority": draft.priority.name, "supported": supported},
        )
    if draft.validate_only and not version.supports_validation:
        raise FailedPrecondition(
            f"{version.name} does not support validation",
            reason="VALIDATION_NOT_SUPPORTED",
            metadata={"resource": version.name},
        )
    if (version.inputs or version.outputs) and profile.object_provider != object_provider:
        raise FailedPrecondition(
            f"the profile {profile.name!r} keeps its inputs and outputs with {profile.object_provider}, which this "
            f"deployment does not offer (it offers {object_provider})",
            reason="OBJECT_PROVIDER_NOT_AVAILABLE",
            metadata={"objectProvider": profile.object_provider, "offered": object_provider},
        )
    declared = {definition.name for definition in version.inputs}
    for index, name in enumerate(draft.expected_inputs):
        if name not in declared:
            raise InvalidArgument.field(f"execution.expected_inputs[{index}]", f"{name!r} is not a declared input")
    return profile


async def create_execution(
    ctx: ExecutionContext,
    principal: Principal,
    draft: ExecutionDraft,
    *,
    request_id: str,
    authorization: str,
    caller_remaining: float | None,
    wait: timedelta | None = None,
    retried_from: str = "",
) -> Execution:
    """Create (and for sync profiles run) an execution; the same ``request_id`` within 24 h → the same one.

    ``authorization`` is the caller's bearer header, forwarded to the catalog. ``wait`` (the request's
    ``wait_timeout``; default zero) is how long to wait for the execution to end before answering: see
    :func:`_answer`.
    """
    validate_draft(draft)
    wait_seconds(wait, caller_remaining, field="wait_timeout", default=0.0)  # bad input: refused before any write
    answer = _Answer(wait, caller_remaining, asyncio.get_running_loop().time())
    execution_id = new_execution_id()
    if request_id:
        request_id = validate_request_id(request_id)
        existing = await _hold_request_id(ctx, principal, request_id, execution_id)
        if existing is not None:
            return await answer(ctx, existing)
    try:
        version = await ctx.catalog.get_version(draft.extension_version, authorization=authorization)
        profile = _check_version(version, draft, ctx.objects.name)
        mode = mode_of(profile.execution_model, profile.mode)
    except BaseException:
        if request_id:
            await ctx.repository.release_request_id(principal.tenant, request_id, execution_id)
        raise
    created = await _store_and_start(
        ctx, principal, draft, execution_id, version, profile, mode, caller_remaining, retried_from
    )
    return await answer(ctx, created)


@dataclass(frozen=True)
class _Answer:
    """What a create answers: the execution once it has ended, or as it is when ``wait`` (the request's
    ``wait_timeout``) is over, as WaitExecution waits; the caller's deadline counts from ``started``.

    At once when there is nothing to wait for: no ``wait``, a ``validate_only`` create, an execution waiting in
    PENDING_INPUTS for the client's uploads, an ended one (a synchronous run that ended with the call).
    """

    wait: timedelta | None
    caller_remaining: float | None
    started: float

    async def __call__(self, ctx: ExecutionContext, execution: Execution) -> Execution:
        if not self.wait or execution.request.validate_only or execution.state is ExecutionState.PENDING_INPUTS:
            return execution
        remaining = self.caller_remaining
        if remaining is not None:
            remaining -= asyncio.get_running_loop().time() - self.started
        seconds = wait_seconds(self.wait, remaining, field="wait_timeout", default=0.0)
        return await wait_for_end(ctx, execution, seconds)


async def _hold_request_id(
    ctx: ExecutionContext, principal: Principal, request_id: str, execution_id: str
) -> Execution | None:
    """Hold ``request_id`` for ``execution_id`` (None), or the execution an earlier create with it made.

    That execution may still be being stored by the earlier create: wait for it (up to ``DEDUP_WAIT_SECONDS``).
    If the earlier create can never finish — the execution service instance running it is gone (crashed before it
    stored the execution) — take the request id over, so the retry creates the execution instead of being told
    to try again for 24 h.
    """
    tenant = principal.tenant
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEDUP_WAIT_SECONDS
    while True:
        holder = await ctx.repository.claim_request_id(
            tenant, request_id, execution_id, now=ctx.clock(), instance=ctx.instance
        )
        if holder is None:
            return None
        if await ctx.repository.find(holder.execution_id) is not None:
            return await load_visible(ctx, principal, holder.execution_id)
        if holder.instance and await ctx.instances.gone(holder.instance):
            if await ctx.repository.take_over_request_id(
                tenant, request_id, holder, execution_id, now=ctx.clock(), instance=ctx.instance
            ):
                _log.warning("request id taken over from a gone instance", instance=holder.instance)
                return None
            continue  # it changed meanwhile: look again
        if loop.time() >= give_up:
            raise FailedPrecondition(
                "a create with this request_id is still in progress or failed; try again",
                reason="REQUEST_IN_PROGRESS",
            )
        await ctx.repository.notifier.wait(holder.execution_id, 0.2)


async def _store_and_start(
    ctx: ExecutionContext,
    principal: Principal,
    draft: ExecutionDraft,
    execution_id: str,
    version: CatalogVersion,
    profile: ProfileSnapshot,
    mode: Mode,
    caller_remaining: float | None,
    retried_from: str,
) -> Execution:
    now = ctx.clock()
    extension_id, _ = parse_version_name(version.name, field="extension_version")
    runs = mode is not Mode.DIRECT
    request = ExecutionRequest(
        extension_version=version.name,
        extension=f"extensions/{extension_id}",
        profile=profile.name,
        priority=draft.priority,
        tenant=principal.tenant,
        created_by=principal.user,
        validate_only=draft.validate_only,
        request=dict(draft.request),
        labels=dict(draft.labels),
        expected_inputs=tuple(dict.fromkeys(draft.expected_inputs)),
        retried_from=retried_from,
    )
    inputs = tuple(InputState(d.name, d.required) for d in version.inputs) if runs else ()
    if mode is Mode.DIRECT:
        initial = ExecutionState.DIRECT_TOKEN_ISSUED
    elif inputs_to_wait_for(inputs, request.expected_inputs):
        initial = ExecutionState.PENDING_INPUTS
    elif mode is Mode.SYNC:
        initial = ExecutionState.RUNNING
    else:
        initial = ExecutionState.QUEUED
    record, event = create(initial, now=now, status_message=_INITIAL_MESSAGES[initial])
    status_key = ""
    started: dict[str, Any] = {}
    if initial is ExecutionState.QUEUED:
        started["outbox"] = Outbox(dispatch=DispatchMarker(record.attempt))
    elif initial is ExecutionState.RUNNING:
        status_key, key_hash = new_status_key()
        started.update(status_key_hash=key_hash, sync_call_owner=ctx.instance)
    execution = Execution(
        id=execution_id,
        record=record,
        request=request,
        mode=mode,
        version=version.snapshot(profile),
        inputs=inputs,
        outputs=tuple(OutputState(d.name) for d in version.outputs) if runs else (),
        input_timeout=ctx.input_timeout,
        **started,
    )
    if initial is ExecutionState.DIRECT_TOKEN_ISSUED:
        ttl = profile.direct_token_ttl or DEFAULT_DIRECT_TOKEN_TTL
        token = ctx.signing.issue_direct_token(
            execution=execution.name,
            extension=execution.request.extension,
            version=version.name,
            profile=profile.name,
            tenant=principal.tenant,
            user=principal.user,
            audience=execution.request.extension,
            ttl_seconds=max(1, int(ttl.total_seconds())),
            now=ctx.now(),
        )
        execution = dataclasses.replace(execution, direct_token=token)
    stored = await ctx.repository.create(execution, event)
    if initial is ExecutionState.RUNNING:
        return await run_sync(ctx, stored, status_key=status_key, caller_remaining=caller_remaining)
    return stored


def draft_of(execution: Execution) -> ExecutionDraft:
    """The client's part of a stored execution (for :func:`retry_execution`)."""
    request = execution.request
    return ExecutionDraft(
        extension_version=request.extension_version,
        profile=request.profile,
        priority=request.priority,
        validate_only=request.validate_only,
        request=dict(request.request),
        labels=dict(request.labels),
        expected_inputs=request.expected_inputs,
    )


async def retry_execution(
    ctx: ExecutionContext,
    principal: Principal,
    execution_id: str,
    *,
    request_id: str,
    authorization: str,
    caller_remaining: float | None,
) -> Execution:
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
        authorization=authorization,
        caller_remaining=caller_remaining,
        retried_from=original.name,
    )
