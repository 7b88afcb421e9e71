"""The gRPC edge: authentication, access rules, error mapping and access logs for every RPC.

One :class:`HubServerInterceptor` wraps each method handler's behaviour so that, inside the coroutine
that runs the handler, it verifies the bearer token, enforces the method's :class:`AccessRule`, checks the
request against the input limits (:mod:`services.platform.limits`), makes the :class:`Principal` visible
through :func:`current_principal`, turns a :class:`HubError` into a ``google.rpc.Status``
(``grpc-status-details-bin``) and any other exception into a bare INTERNAL (generic message, logged here).

Requests are decoded by a tolerant deserializer: a request the protobuf runtime refuses (nested too deeply,
bad UTF-8) reaches the wrapper as :class:`_Undecodable` and is answered INVALID_ARGUMENT with a field violation
after the token check, instead of gRPC's own error, which would carry the runtime's exception text.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status

from services.platform.auth.access import PUBLIC_METHODS, AccessRule, check_access, principal_scope, resolve_rule
from services.platform.auth.principal import Principal
from services.platform.auth.verifier import TokenVerifier
from services.platform.errors import (
    HubError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    internal_status,
)
from services.platform.grpc_handlers import (
    Behaviour,
    Deserializer,
    WrappingServerInterceptor,
    rewrap,
    serve_stream,
)
from services.platform.limits import ensure_valid_message, undecodable_violation
from services.platform.logging import get_logger

__all__ = ["HubServerInterceptor", "bearer_token"]

_access_log = get_logger("exthub.access")
#: the stdlib logger behind ``_access_log``: its cached level check skips building a line nobody would see
_access_level = logging.getLogger("exthub.access")
_error_log = get_logger("exthub.grpc")


class _Undecodable:
    """A request the protobuf runtime refused to decode (the exception text is never shown to the caller)."""

    __slots__ = ("data", "descriptor")

    def __init__(self, descriptor: Any, data: bytes) -> None:
        self.descriptor = descriptor
        self.data = data

    def error(self) -> InvalidArgument:
        violation = undecodable_violation(self.descriptor, self.data)
        return InvalidArgument(
            f"invalid {violation.field}: {violation.description}",
            metadata={"field": violation.field},
            field_violations=[violation],
        )


def _tolerant(deserializer: Deserializer) -> Deserializer:
    """``deserializer`` that returns :class:`_Undecodable` instead of raising."""
    if deserializer is None:
        return None
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _Undecodable(descriptor, data)

    return deserialize


def _admissible(request: Any) -> None:
    """Refuse an undecodable request or one that breaks an input limit (streams of requests are not checked)."""
    if isinstance(request, _Undecodable):
        raise request.error()
    if isinstance(request, Message):
        ensure_valid_message(request)


def bearer_token(metadata: Any) -> str | None:
    """The bearer token of the ``authorization`` metadata; None when absent, ``""`` when malformed."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return None


class _CallState:
    """What the access log needs to know about one call."""

    __slots__ = ("code", "principal")

    def __init__(self) -> None:
        self.code: grpc.StatusCode = grpc.StatusCode.OK
        self.principal: Principal | None = None


class HubServerInterceptor(WrappingServerInterceptor):
    """Auth + access rules + error mapping + access log for a ``grpc.aio`` server.

    ``access_rules`` maps ``/pkg.Service/Method`` (or ``/pkg.Service/*``) to a rule; health and
    reflection are public by default. A method with no rule is denied (``METHOD_NOT_ALLOWED``).
    """

    def __init__(self, verifier: TokenVerifier, access_rules: Mapping[str, AccessRule]) -> None:
        self._verifier = verifier
        self._rules: dict[str, AccessRule] = {**PUBLIC_METHODS, **access_rules}
        super().__init__()

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        rule = resolve_rule(self._rules, method)
        return rewrap(
            handler,
            unary=lambda behaviour: self._wrap_unary(method, rule, behaviour),
            stream=lambda behaviour: self._wrap_stream(method, rule, behaviour),
            unary_request_deserializer=_tolerant,
        )

    # -- wrappers ----------------------------------------------------------------------------------

    def _wrap_unary(self, method: str, rule: AccessRule | None, behaviour: Behaviour) -> Behaviour:
        """Wrap a behaviour that returns one response (request may be a message or an iterator)."""

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            state = _CallState()
            started = time.perf_counter()
            try:
                principal = await self._admit(method, rule, context, state)
                _admissible(request)
                with principal_scope(principal):
                    result = behaviour(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
            except BaseException as exc:
                await self._fail(exc, method, context, state)
                raise  # only reached for aborts/cancellation, which pass through untouched
            finally:
                self._log(method, state, started)

        return wrapped

    def _wrap_stream(self, method: str, rule: AccessRule | None, behaviour: Behaviour) -> Behaviour:
        """Wrap a streaming-response behaviour: an async generator or a coroutine using ``context.write``.

        The wrapper itself is a coroutine that writes each yielded message, so the principal context
        and the error mapping cover the whole stream (and grpc/grpc#37208 does not apply).
        """

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            state = _CallState()
            started = time.perf_counter()
            try:
                principal = await self._admit(method, rule, context, state)
                _admissible(request)
                with principal_scope(principal):
                    await serve_stream(behaviour(request, context), context)
            except BaseException as exc:
                await self._fail(exc, method, context, state)
                raise
            finally:
                self._log(method, state, started)

        return wrapped

    # -- steps -------------------------------------------------------------------------------------

    async def _admit(
        self,
        method: str,
        rule: AccessRule | None,
        context: grpc.aio.ServicerContext[Any, Any],
        state: _CallState,
    ) -> Principal | None:
        """Verify the token if one is sent (always, even on public methods) and enforce the rule."""
        token = bearer_token(context.invocation_metadata())
        principal: Principal | None = None
        if token is not None:
            if not token:
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            principal = await self._verifier.verify(token)
            state.principal = principal
        if rule is None:
            raise PermissionDenied(
                "this method is not allowed", reason="METHOD_NOT_ALLOWED", metadata={"method": method}
            )
        check_access(rule, principal)
        return principal

    async def _fail(
        self, exc: BaseException, method: str, context: grpc.aio.ServicerContext[Any, Any], state: _CallState
    ) -> None:
        """Abort the call for a HubError or an unexpected exception; return for aborts/cancellation."""
        if isinstance(exc, asyncio.CancelledError):
            state.code = grpc.StatusCode.CANCELLED
            return
        if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
            code = context.code() if hasattr(context, "code") else None
            state.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            return
        if isinstance(exc, HubError):
            state.code = exc.code
            status = exc.to_status()
        else:
            state.code = grpc.StatusCode.INTERNAL
            _error_log.error("unhandled exception in RPC handler", method=method, exc_info=exc)
            status = internal_status()
        await context.abort_with_status(rpc_status.to_status(status))

    @staticmethod
    def _log(method: str, state: _CallState, started: float) -> None:
        if not _access_level.isEnabledFor(logging.INFO):
            return
        principal = state.principal
        _access_log.info(
            "rpc",
            method=method,
            code=state.code.name,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            tenant=principal.tenant if principal else None,
            user=principal.user if principal else None,
        )
