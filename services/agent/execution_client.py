"""The execution service, as the agent sees it: ``SignExtensionRequest`` with an Agent-role bearer token."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import grpc
from google.rpc import error_details_pb2, status_pb2

from exthub.execution.v1 import execution_service_pb2, execution_service_pb2_grpc
from services.agent.adapters.signing import SigningRefused
from services.platform.auth.dev_issuer import DevIssuer
from services.platform.auth.principal import AGENT

if TYPE_CHECKING:
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

__all__ = ["DevAgentTokens", "ExecutionServiceSigner", "TokenSource"]

SERVICE_TENANT = "exthub"
TOKEN_TTL_SECONDS = 3600
TOKEN_REFRESH_MARGIN_SECONDS = 300
SIGN_TIMEOUT_SECONDS = 10.0
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class TokenSource(Protocol):
    """Bearer tokens for the agent's own calls."""

    def token(self) -> str:
        """A valid token with role Agent (cheap: cached until shortly before it expires)."""
        ...


class DevAgentTokens:
    """Local backend: Agent-role tokens (tenant ``exthub``, user = the agent id) from the development issuer.

    Build it with an issuer already loaded (``DevIssuer.load_or_create`` does file I/O: call it at startup
    through ``asyncio.to_thread``).
    """

    def __init__(self, issuer: DevIssuer, *, agent_id: str) -> None:
        self._issuer = issuer
        self._agent_id = agent_id
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        now = time.time()
        if now >= self._expires - TOKEN_REFRESH_MARGIN_SECONDS:
            self._token = self._issuer.issue(
                tenant=SERVICE_TENANT, user=self._agent_id, roles=[AGENT], ttl_seconds=TOKEN_TTL_SECONDS
            )
            self._expires = now + TOKEN_TTL_SECONDS
        return self._token


class ExecutionServiceSigner:
    """A ``BodySigner`` calling ``ExecutionService.SignExtensionRequest`` at ``address``.

    FAILED_PRECONDITION (stale attempt, not RUNNING), INVALID_ARGUMENT, NOT_FOUND and PERMISSION_DENIED become
    :class:`SigningRefused` (the attempt fails); anything else propagates (a transient failure).
    """

    def __init__(self, address: str, tokens: TokenSource, *, timeout: float = SIGN_TIMEOUT_SECONDS) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: ExecutionServiceAsyncStub = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)
        self._tokens = tokens
        self._timeout = timeout

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        request = execution_service_pb2.SignExtensionRequestRequest(name=execution, attempt=attempt, body=body)
        try:
            response = await self._stub.SignExtensionRequest(
                request,
                timeout=self._timeout,
                metadata=(("authorization", f"Bearer {self._tokens.token()}"),),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _PERMANENT_CODES:
                raise SigningRefused(
                    f"the execution service refused to sign: {error.details() or error.code().name}",
                    reason=_error_reason(error) or error.code().name,
                ) from None
            raise
        if not response.signature:
            raise SigningRefused("the execution service returned no signature", reason="SIGNATURE_MISSING")
        return response.signature

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ``ErrorInfo.reason`` in the call's rich status, if any."""
    for key, value in error.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:
            return ""
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return ""
