"""The ``http-json/sync/v1`` and ``http-json/async/v1`` adapter: one POST of signed JSON per attempt.

Target: the profile's ``extension_settings["execution_url"]`` (``validation_url`` when ``validate_only``).
Body: :mod:`services.agent.adapters.request_body`, signed by a ``BodySigner`` (see
:mod:`services.agent.adapters.signing`). Redirects are not followed.

Egress (:mod:`services.platform.egress`): before anything is built or signed, the URL is checked and its host
resolved once; the POST goes to that checked address (``Host`` header and TLS server name stay the URL's
host), so DNS rebinding cannot move it to an internal address. A refused URL fails the attempt for good
(``EGRESS_REFUSED``); a host that does not resolve is a transient ``EXTENSION_UNREACHABLE``.

Reply → outcome (:func:`classify_http_status` is the one classification of an extension's HTTP status):

| reply | outcome |
|---|---|
| 200 (other 2xx) | SUCCEEDED (``responseData`` → ``result``, ``providedOutputs``); VALIDATION_SUCCEEDED |
| 202 | ACCEPTED (long-running: the extension reports through ``statusUrl``) |
| 400 with ``validationErrors`` | VALIDATION_FAILED with the errors |
| other 4xx | FAILED, ``EXTENSION_REJECTED`` (permanent) |
| 5xx, 429 | RETRYABLE_FAILURE, ``EXTENSION_FAILED`` (408/504: ``EXTENSION_TIMEOUT``) |
| 1xx, 3xx, malformed 200 body, ``responseData`` beyond the Struct limits | FAILED, ``EXTENSION_PROTOCOL_ERROR`` |
| body over 4 MiB (200/400) | FAILED, ``EXTENSION_RESPONSE_TOO_LARGE`` |
| connection error | RETRYABLE_FAILURE, ``EXTENSION_UNREACHABLE`` |
| past ``call_timeout`` / the caller's deadline | RETRYABLE_FAILURE, ``EXTENSION_TIMEOUT`` |
| past the task's ``deadline`` | FAILED, ``EXECUTION_DEADLINE_EXCEEDED`` (the execution times out; no retry) |

The time allowed for one call is min(``call_timeout``, time until ``task.deadline``, the caller's gRPC deadline
less a small margin to send the answer), and never more than ``max_call_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from yarl import URL

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.execution import (
    DEFAULT_EXECUTION_TIMEOUT,
    EXECUTION_DEADLINE_EXCEEDED,
    EXTENSION_FAILED,
    EXTENSION_TIMEOUT,
    TIMEOUT_BOUND,
    TimeoutBound,
)
from exthub.contract.extension_request import build_request_document, encode_body
from exthub.contract.signatures import SIGNATURE_HEADER
from exthub.execution.v1 import execution_pb2
from services.agent.adapters.signing import BodySigner, PreparedRequest, SigningRefused
from services.agent.extension_services import ExtensionServiceRegistry
from services.agent.json_values import json_integers, struct_from_json
from services.agent.outcomes import (
    EXTENSION_MISCONFIGURED,
    EXTENSION_PROTOCOL_ERROR,
    EXTENSION_REJECTED,
    EXTENSION_RESPONSE_TOO_LARGE,
    EXTENSION_UNREACHABLE,
    REQUEST_NOT_SIGNED,
    REQUEST_SIGNING_FAILED,
    REQUEST_SIGNING_REFUSED,
    AttemptFailure,
    Outcome,
)
from services.platform.egress import EGRESS_UNRESOLVABLE, Destination, EgressPolicy, EgressRefused
from services.platform.errors import DeadlineExceeded, ResourceExhausted
from services.platform.limits import check_json_value
from services.platform.logging import get_logger

__all__ = [
    "CALLER_MARGIN_SECONDS",
    "EGRESS_REFUSED",
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_HEADER",
    "HttpJsonAdapter",
    "HttpOutcome",
    "classify_http_status",
]

_log = get_logger("exthub.agent.http_json")
_log_level = logging.getLogger("exthub.agent.http_json")  # the stdlib logger behind ``_log`` (its level check)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
CALLER_MARGIN_SECONDS = 0.05
DEFAULT_MAX_CALL_SECONDS = DEFAULT_EXECUTION_TIMEOUT.total_seconds()
MAX_VALIDATION_ERRORS = 100
MAX_TEXT_CHARS = 1024
MAX_MESSAGE_CHARS = 200
READ_CHUNK_BYTES = 64 * 1024
EGRESS_REFUSED = "EGRESS_REFUSED"
_EXTENSION_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

HttpOutcome = Literal["success", "accepted", "validation_failed", "permanent", "transient"]


def classify_http_status(code: int, *, has_validation_errors: bool = False) -> HttpOutcome:
    """What an extension's HTTP status means for the attempt.

    202 → accepted (long-running: stays RUNNING); other 2xx → success; 400 with ``validationErrors`` →
    validation_failed; 408 and 429 → transient; other 4xx → permanent; 5xx → transient. Anything else
    (1xx, 3xx — redirects are not followed — or out of range) breaks the contract: permanent.
    """
    if code == 202:
        return "accepted"
    if 200 <= code <= 299:
        return "success"
    if code == 400 and has_validation_errors:
        return "validation_failed"
    if code in (408, 429):
        return "transient"
    if 500 <= code <= 599:
        return "transient"
    return "permanent"


@dataclass(frozen=True)
class _Budget:
    seconds: float
    bound: TimeoutBound


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    truncated: bool


class HttpJsonAdapter:
    """The http-json adapter. ``session`` is the agent's shared ``aiohttp.ClientSession`` (not owned here);
    ``egress`` decides which URLs are called (default: public addresses only, no allow-list)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        services: ExtensionServiceRegistry,
        signer: BodySigner | None = None,
        sign: bool = True,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
        user_agent: str = "exthub-agent",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        egress: EgressPolicy | None = None,
    ) -> None:
        if signer is not None and not sign:
            raise ValueError("a signer was given but sign=False: choose one")
        self._session = session
        self._services = services
        self._signer = signer
        self._sign = sign
        self._max_response_bytes = max_response_bytes
        self._max_call_seconds = max_call_seconds
        self._user_agent = user_agent
        self._clock = clock
        self._egress = egress if egress is not None else EgressPolicy()

    async def execute(
        self, task: execution_pb2.ExecutionTask, *, time_limit: float | None = None
    ) -> agent_pb.ExecuteResponse:
        """Run one attempt of ``task``; every failure is an outcome, never an exception."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            url = _target_url(task)
            budget = self._budget(task, time_limit)
            if budget.seconds <= 0:
                raise _timeout_failure(budget)
            prepared: PreparedRequest | None = None
            try:
                async with asyncio.timeout(budget.seconds):
                    destination = await self._destination(task, url)
                    prepared = await self._prepare(task)
                    reply = await self._post(destination, prepared)
            except TimeoutError:
                if prepared is None and budget.bound is not TimeoutBound.DEADLINE:
                    raise AttemptFailure.retryable(
                        "building or signing the request took too long", REQUEST_SIGNING_FAILED
                    ) from None
                raise _timeout_failure(budget) from None
            except aiohttp.InvalidURL:
                raise AttemptFailure.permanent(
                    "the extension URL is not usable", EXTENSION_MISCONFIGURED, metadata={"setting": _setting(task)}
                ) from None
            except aiohttp.ClientError as exc:
                raise AttemptFailure.retryable(
                    f"the extension is unreachable ({type(exc).__name__})", EXTENSION_UNREACHABLE
                ) from None
            response = self._interpret(task, reply)
        except AttemptFailure as failure:
            response = failure.response(task)
        if _log_level.isEnabledFor(logging.INFO):
            _log.info(
                "attempt finished",
                execution=task.execution,
                attempt=task.attempt,
                model=task.execution_model,
                outcome=Outcome.Name(response.outcome),
                http_status=response.http_status,
                duration_ms=round((loop.time() - started) * 1000, 1),
            )
        return response

    # -- preparing and sending ------------------------------------------------------------------------

    def _budget(self, task: execution_pb2.ExecutionTask, time_limit: float | None) -> _Budget:
        call_timeout = self._max_call_seconds
        if task.HasField("call_timeout"):
            configured = task.call_timeout.ToTimedelta().total_seconds()
            if configured > 0:
                call_timeout = min(configured, self._max_call_seconds)
        candidates = [_Budget(call_timeout, TimeoutBound.CALL_TIMEOUT)]
        if task.HasField("deadline"):
            remaining = (task.deadline.ToDatetime(tzinfo=UTC) - self._clock()).total_seconds()
            candidates.append(_Budget(remaining, TimeoutBound.DEADLINE))
        if time_limit is not None and math.isfinite(time_limit):
            candidates.append(_Budget(time_limit - CALLER_MARGIN_SECONDS, TimeoutBound.CALLER))
        return min(candidates, key=lambda budget: budget.seconds)

    async def _destination(self, task: execution_pb2.ExecutionTask, url: URL) -> Destination:
        """The checked address to call (before anything is built or signed for it)."""
        try:
            return await self._egress.resolve(str(url))
        except EgressRefused as refused:
            metadata = {"setting": _setting(task), "egressReason": refused.reason}
            if refused.reason == EGRESS_UNRESOLVABLE:
                raise AttemptFailure.retryable(
                    "the extension's host cannot be resolved", EXTENSION_UNREACHABLE, metadata=metadata
                ) from None
            _log.warning("extension URL refused by the egress policy", execution=task.execution, **metadata)
            raise AttemptFailure.permanent(
                f"the hub does not call the extension's URL: {refused.message}", EGRESS_REFUSED, metadata=metadata
            ) from None

    async def _prepare(self, task: execution_pb2.ExecutionTask) -> PreparedRequest:
        if self._signer is None and self._sign:
            raise AttemptFailure.permanent("the agent has no request signer", REQUEST_NOT_SIGNED)
        contexts = await self._services.build_contexts(task)
        try:
            body = encode_body(build_request_document(task, contexts))
        except (ValueError, TypeError):
            raise AttemptFailure.permanent("the request cannot be encoded as JSON", EXTENSION_PROTOCOL_ERROR) from None
        if self._signer is None:
            return PreparedRequest(body=body, signature=None)
        if task.HasField("signed_request") and task.signed_request.body == body and task.signed_request.signature:
            return PreparedRequest(body=body, signature=task.signed_request.signature)  # signed ahead by the hub
        try:
            signature = await self._signer.sign(task.execution, task.attempt, body)
        except SigningRefused as refused:
            _log.warning("request signing refused", execution=task.execution, reason=refused.reason)
            raise AttemptFailure.permanent(
                refused.message, REQUEST_SIGNING_REFUSED, metadata={"signingReason": refused.reason}
            ) from None
        except Exception as exc:
            _log.warning("request signing failed", execution=task.execution, error=type(exc).__name__)
            raise AttemptFailure.retryable("the request could not be signed", REQUEST_SIGNING_FAILED) from None
        return PreparedRequest(body=body, signature=signature)

    async def _post(self, destination: Destination, prepared: PreparedRequest) -> _Reply:
        headers = {
            "Host": destination.host_header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if prepared.signature is not None:
            headers[SIGNATURE_HEADER] = prepared.signature
        async with self._session.post(
            destination.pinned_url,
            data=prepared.body,
            headers=headers,
            allow_redirects=False,
            server_hostname=destination.server_hostname,
        ) as response:
            body, truncated = await _read_limited(response, self._max_response_bytes)
            return _Reply(status=response.status, body=body, truncated=truncated)

    # -- interpreting the reply -----------------------------------------------------------------------

    def _interpret(self, task: execution_pb2.ExecutionTask, reply: _Reply) -> agent_pb.ExecuteResponse:
        status = reply.status
        if reply.truncated and (status == 400 or (200 <= status <= 299 and status != 202)):
            raise AttemptFailure.permanent(
                f"the extension's reply exceeds {self._max_response_bytes} bytes",
                EXTENSION_RESPONSE_TOO_LARGE,
                http_status=status,
            )
        document = None if reply.truncated else _json_object(reply.body)
        validation_errors = _validation_errors(document) if status == 400 else []
        kind = classify_http_status(status, has_validation_errors=bool(validation_errors))
        if kind == "success":
            return self._success(task, status, reply.body, document)
        if kind == "accepted":
            return agent_pb.ExecuteResponse(outcome=Outcome.ACCEPTED, http_status=status)
        if kind == "validation_failed":
            return agent_pb.ExecuteResponse(
                outcome=Outcome.VALIDATION_FAILED, validation_errors=validation_errors, http_status=status
            )
        detail = _error_detail(document)
        message = f"the extension answered HTTP {status}" + (f": {detail[0]}" if detail[0] else "")
        metadata = {"extensionReason": detail[1]} if detail[1] else {}
        if kind == "permanent":
            reason = EXTENSION_REJECTED if 400 <= status <= 499 else EXTENSION_PROTOCOL_ERROR
            raise AttemptFailure.permanent(message, reason, http_status=status, metadata=metadata)
        if status in (408, 504):
            raise AttemptFailure.retryable(
                message, EXTENSION_TIMEOUT, http_status=status, metadata=metadata, error_type=DeadlineExceeded
            )
        if status == 429:
            raise AttemptFailure.retryable(
                message, EXTENSION_FAILED, http_status=status, metadata=metadata, error_type=ResourceExhausted
            )
        raise AttemptFailure.retryable(message, EXTENSION_FAILED, http_status=status, metadata=metadata)

    def _success(
        self, task: execution_pb2.ExecutionTask, status: int, body: bytes, document: dict[str, Any] | None
    ) -> agent_pb.ExecuteResponse:
        if document is None:
            if body.strip():
                raise AttemptFailure.permanent(
                    "the extension's reply is not a JSON object", EXTENSION_PROTOCOL_ERROR, http_status=status
                )
            document = {}
        response_data = document.get("responseData")
        provided = document.get("providedOutputs")
        if response_data is not None and not isinstance(response_data, dict):
            raise AttemptFailure.permanent(
                "responseData must be a JSON object", EXTENSION_PROTOCOL_ERROR, http_status=status
            )
        if provided is not None and (
            not isinstance(provided, list) or not all(isinstance(name, str) for name in provided)
        ):
            raise AttemptFailure.permanent(
                "providedOutputs must be a list of output names", EXTENSION_PROTOCOL_ERROR, http_status=status
            )
        response = agent_pb.ExecuteResponse(
            outcome=Outcome.VALIDATION_SUCCEEDED if task.validate_only else Outcome.SUCCEEDED, http_status=status
        )
        if response_data is not None and (violations := check_json_value(response_data, "responseData")):
            raise AttemptFailure.permanent(
                f"the reply's {violations[0].field} breaks a limit: {violations[0].description}",
                EXTENSION_PROTOCOL_ERROR,
                http_status=status,
            )
        if response_data is not None:
            try:
                response.result.CopyFrom(struct_from_json(json_integers(response_data)))
            except Exception:
                raise AttemptFailure.permanent(
                    "responseData cannot be represented as a Struct", EXTENSION_PROTOCOL_ERROR, http_status=status
                ) from None
        declared = {binding.definition.name for binding in task.outputs}
        names = list(dict.fromkeys(provided or []))
        unknown = [name for name in names if name not in declared]
        if unknown:
            _log.warning("extension reported undeclared outputs", execution=task.execution, outputs=unknown[:10])
        response.provided_outputs.extend(name for name in names if name in declared)
        return response


# -- helpers ----------------------------------------------------------------------------------------------


def _setting(task: execution_pb2.ExecutionTask) -> str:
    return "validation_url" if task.validate_only else "execution_url"


def _target_url(task: execution_pb2.ExecutionTask) -> URL:
    setting = _setting(task)
    raw = task.extension_settings.get(setting, "").strip()
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        url = None
    if not raw or url is None or url.scheme not in ("http", "https") or not url.host:
        raise AttemptFailure.permanent(
            f"the profile's extension setting {setting} is missing or not an http(s) URL",
            EXTENSION_MISCONFIGURED,
            metadata={"setting": setting},
        )
    return url


def _timeout_failure(budget: _Budget) -> AttemptFailure:
    metadata = {TIMEOUT_BOUND: budget.bound.value}
    if budget.bound is TimeoutBound.DEADLINE:
        return AttemptFailure.permanent(
            "the execution's deadline passed before the extension answered",
            EXECUTION_DEADLINE_EXCEEDED,
            metadata=metadata,
            error_type=DeadlineExceeded,
        )
    what = "call timeout" if budget.bound is TimeoutBound.CALL_TIMEOUT else "caller's deadline"
    return AttemptFailure.retryable(
        f"the extension did not answer within the {what} ({max(budget.seconds, 0):.3g} s)",
        EXTENSION_TIMEOUT,
        metadata=metadata,
        error_type=DeadlineExceeded,
    )


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more (the rest is not read)."""
    if response.content_length is not None and response.content_length > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body.strip():
        return None
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _text(value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        return ""
    return _CONTROL_CHARS.sub(" ", value)[:limit]


def _validation_errors(document: dict[str, Any] | None) -> list[execution_pb2.ValidationError]:
    raw = document.get("validationErrors") if document is not None else None
    if not isinstance(raw, list):
        return []
    errors: list[execution_pb2.ValidationError] = []
    for item in raw[:MAX_VALIDATION_ERRORS]:
        if not isinstance(item, dict):
            continue
        message = _text(item.get("message"))
        if not message:
            continue
        error = execution_pb2.ValidationError(code=_text(item.get("code"), 128), message=message)
        error.field = _text(item.get("field"), 512)
        data = item.get("data")
        if isinstance(data, dict) and not check_json_value(data, "data"):
            try:
                error.data.CopyFrom(struct_from_json(json_integers(data)))
            except Exception:
                error.ClearField("data")
        errors.append(error)
    return errors


def _error_detail(document: dict[str, Any] | None) -> tuple[str, str]:
    """The extension's own ``error.message`` (bounded) and ``error.reason`` (if UPPER_SNAKE)."""
    error = document.get("error") if document is not None else None
    if not isinstance(error, dict):
        return "", ""
    reason = error.get("reason")
    return (
        _text(error.get("message"), MAX_MESSAGE_CHARS),
        reason if isinstance(reason, str) and _EXTENSION_REASON.fullmatch(reason) else "",
    )
