"""The sample extension ``echo``: ``POST /execute``, ``POST /validate``, ``GET /healthz``.

Every POST must carry a valid ``Exthub-Signature`` over its exact body, for one of the extensions this server
serves (``EchoConfig.audiences``), not expired and not seen before, naming the execution and attempt of the
body (401 otherwise; see ``docs/extension-contract.md``). Behaviour follows ``requestParameters``:

- nothing special → 200 ``{"responseData": {"echo", "executionId", "attempt"[, "inputs"]}, "providedOutputs"}``;
- ``delaySeconds: N`` → wait N seconds first (with ``longRunning``: after the 202 and the 50 % report);
  504 (or a FAILED report) when the request's ``deadline`` passes before that;
- ``failTimes: N`` → 503 to attempts 1..N;
- ``failWith: CODE`` → that status (400 with ``validationErrors`` when CODE is 400 and ``invalid`` is set);
- ``longRunning: true`` → 202, then RUNNING 50 % and SUCCEEDED 100 % reports to ``statusUrl``;
- inputs with an accessor are read (``responseData.inputs.<name> = {size, sha256}``), declared outputs with an
  accessor are written (content: the JSON of ``requestParameters``) and listed in ``providedOutputs``.

``POST /validate``: ``invalid: true`` → 400 with one validation error on field ``invalid``; else 200 ``{}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from services.echo.signature import (
    SIGNATURE_HEADER,
    JwksSource,
    KeysUnavailable,
    SignatureInvalid,
    SignatureVerifier,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_OUTBOUND_TIMEOUT = 30.0
DEFAULT_STATUS_TIMEOUT = 10.0
MAX_DELAY_SECONDS = 24 * 3600.0
STATUS_REPORT_TRIES = 3
READ_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class EchoConfig:
    """Tunables of the echo app (timeouts in seconds). ``audiences``: the extensions (``extensions/{id}``) this
    server serves; None serves whichever extension a correctly signed request names."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    outbound_timeout: float = DEFAULT_OUTBOUND_TIMEOUT
    status_timeout: float = DEFAULT_STATUS_TIMEOUT
    status_retry_backoff: float = 0.5
    audiences: frozenset[str] | None = None


@dataclass
class _State:
    verifier: SignatureVerifier
    config: EchoConfig
    session: aiohttp.ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    closing: bool = False


STATE_KEY: web.AppKey[_State] = web.AppKey("echo_state", _State)


class EchoError(Exception):
    """An answer other than success: HTTP ``status`` with a JSON body."""

    def __init__(self, status: int, reason: str, message: str, *, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    def response(self) -> web.Response:
        body = self.body if self.body is not None else _error_body(self.status, self.reason, self.message)
        return web.json_response(body, status=self.status)


def _error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "reason": reason, "message": message}}


def _validation_error(field_name: str, message: str, code: str = "INVALID") -> EchoError:
    return EchoError(
        400,
        "VALIDATION_FAILED",
        message,
        body={"validationErrors": [{"code": code, "message": message, "field": field_name}]},
    )


@dataclass(frozen=True)
class _Request:
    """The parts of the extension request echo uses."""

    execution_id: str
    attempt: int
    params: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    deadline: datetime | None
    status_url: str | None
    status_update_key: str | None

    def remaining(self) -> float:
        """Seconds until the deadline (infinity without one)."""
        if self.deadline is None:
            return math.inf
        return (self.deadline - datetime.now(UTC)).total_seconds()


def create_echo_app(
    jwks_source: JwksSource | SignatureVerifier, *, config: EchoConfig | None = None
) -> web.Application:
    """The echo extension. ``jwks_source`` provides the hub's public keys (or pass a ready verifier)."""
    config = config or EchoConfig()
    verifier = (
        jwks_source
        if isinstance(jwks_source, SignatureVerifier)
        else SignatureVerifier(jwks_source, audiences=config.audiences)
    )
    app = web.Application(middlewares=[_json_errors], client_max_size=config.max_body_bytes)
    app[STATE_KEY] = _State(verifier=verifier, config=config)
    app.cleanup_ctx.append(_client_session)
    app.on_shutdown.append(_cancel_background_tasks)
    app.router.add_post("/execute", _execute)
    app.router.add_post("/validate", _validate)
    app.router.add_get("/healthz", _healthz)
    return app


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE_KEY]
    timeout = aiohttp.ClientTimeout(total=state.config.outbound_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        state.session = session
        yield
        state.closing = True
        await _cancel_background_tasks(app)
        state.session = None


async def _cancel_background_tasks(app: web.Application) -> None:
    state = app[STATE_KEY]
    state.closing = True
    tasks = list(state.tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except EchoError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(_error_body(exc.status, "HTTP_ERROR", exc.reason), status=exc.status)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "SERVING"})


# ---- request intake -----------------------------------------------------------------------------------------


async def _signed_request(request: web.Request) -> _Request:
    """Read the body, verify its signature (401), parse it (400)."""
    state = request.app[STATE_KEY]
    body = await request.read()
    try:
        claims = await state.verifier.verify(request.headers.get(SIGNATURE_HEADER), body)
    except SignatureInvalid as exc:
        raise EchoError(401, "SIGNATURE_INVALID", str(exc)) from None
    except KeysUnavailable as exc:
        raise EchoError(503, "KEYS_UNAVAILABLE", str(exc)) from None
    try:
        document = json.loads(body)
    except ValueError:
        raise EchoError(400, "INVALID_JSON", "the body is not JSON") from None
    if not isinstance(document, dict):
        raise EchoError(400, "INVALID_JSON", "the body is not a JSON object")
    parsed = _parse_request(document)
    _check_bound(claims, document, parsed)
    return parsed


def _check_bound(claims: Mapping[str, Any], document: Mapping[str, Any], parsed: _Request) -> None:
    """The signature's audience, execution and attempt are the body's (401 otherwise)."""
    extension = document.get("extensionId")
    if not isinstance(extension, str) or not extension or claims.get("aud") != f"extensions/{extension}":
        raise EchoError(401, "SIGNATURE_INVALID", "the signature is for another extension than the request")
    execution = str(claims.get("execution", "")).removeprefix("executions/")
    if execution != parsed.execution_id.removeprefix("executions/") or claims.get("attempt") != parsed.attempt:
        raise EchoError(401, "SIGNATURE_INVALID", "the signature is for another execution or attempt")


def _parse_request(document: dict[str, Any]) -> _Request:
    attempt = document.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise EchoError(400, "INVALID_FIELD", "attempt must be a positive integer")
    params = document.get("requestParameters") or {}
    if not isinstance(params, dict):
        raise EchoError(400, "INVALID_FIELD", "requestParameters must be an object")
    inputs = document.get("inputs") or {}
    outputs = document.get("outputs") or {}
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise EchoError(400, "INVALID_FIELD", "inputs and outputs must be objects")
    deadline = _parse_deadline(document.get("deadline"))
    status_url = document.get("statusUrl")
    key = document.get("statusUpdateKey")
    return _Request(
        execution_id=str(document.get("executionId", "")),
        attempt=attempt,
        params=params,
        inputs=inputs,
        outputs=outputs,
        deadline=deadline,
        status_url=status_url if isinstance(status_url, str) and status_url else None,
        status_update_key=key if isinstance(key, str) and key else None,
    )


def _parse_deadline(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EchoError(400, "INVALID_FIELD", "deadline must be an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EchoError(400, "INVALID_FIELD", "deadline must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise EchoError(400, "INVALID_FIELD", "deadline must carry a time zone")
    return moment


# ---- endpoints ----------------------------------------------------------------------------------------------


async def _validate(request: web.Request) -> web.Response:
    req = await _signed_request(request)
    if req.params.get("invalid"):
        raise _validation_error("invalid", "the request asked to be invalid")
    return web.json_response({})


async def _execute(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    req = await _signed_request(request)
    params = req.params

    delay = params.get("delaySeconds")
    if delay is not None and (not _is_number(delay) or not 0 <= delay <= MAX_DELAY_SECONDS):
        raise _validation_error("delaySeconds", f"delaySeconds must be a number from 0 to {MAX_DELAY_SECONDS:g}")
    long_running = params.get("longRunning") is True
    if delay is not None and not long_running:
        await _delay(float(delay), req)

    fail_times = params.get("failTimes")
    if fail_times is not None:
        if not isinstance(fail_times, int) or isinstance(fail_times, bool) or fail_times < 0:
            raise _validation_error("failTimes", "failTimes must be a non-negative integer")
        if req.attempt <= fail_times:
            raise EchoError(503, "FAIL_TIMES", f"failing attempt {req.attempt} of {fail_times} on purpose")

    fail_with = params.get("failWith")
    if fail_with is not None:
        if not isinstance(fail_with, int) or isinstance(fail_with, bool) or not 400 <= fail_with <= 599:
            raise _validation_error("failWith", "failWith must be an HTTP status from 400 to 599")
        if fail_with == 400 and params.get("invalid"):
            raise _validation_error("invalid", "the request asked to be invalid")
        raise EchoError(fail_with, "FAIL_WITH", f"failing with {fail_with} on purpose")

    if long_running:
        if req.status_url is None or req.status_update_key is None:
            raise _validation_error("statusUrl", "longRunning needs statusUrl and statusUpdateKey")
        if state.closing:
            raise EchoError(503, "SHUTTING_DOWN", "the extension is shutting down")
        work = _long_running(state, req, delay=float(delay or 0))
        task = asyncio.create_task(work, name=f"echo-long-running-{req.execution_id}")
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return web.json_response({"statusMessage": "accepted"}, status=202)

    response_data, provided = await _run(state, req)
    return web.json_response({"responseData": response_data, "providedOutputs": provided})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def _delay(seconds: float, req: _Request) -> None:
    remaining = req.remaining()
    if seconds <= remaining:
        await asyncio.sleep(seconds)
        return
    await asyncio.sleep(max(remaining, 0.0))
    raise EchoError(504, "DEADLINE_EXCEEDED", "the deadline passed before the delay ended")


# ---- the work: inputs, outputs, result ---------------------------------------------------------------------


async def _run(state: _State, req: _Request) -> tuple[dict[str, Any], list[str]]:
    """Read the inputs, write the outputs; return (responseData, providedOutputs)."""
    session = _session(state)
    response_data: dict[str, Any] = {"echo": req.params, "executionId": req.execution_id, "attempt": req.attempt}
    read: dict[str, dict[str, Any]] = {}
    for name, entry in req.inputs.items():
        accessor = _accessor_of(entry)
        if accessor is not None:
            read[name] = await _read_input(session, state.config, req, name, accessor)
    if read:
        response_data["inputs"] = read
    content = json.dumps(req.params, sort_keys=True, separators=(",", ":")).encode()
    provided: list[str] = []
    for name, entry in req.outputs.items():
        accessor = _accessor_of(entry)
        if accessor is not None:
            await _write_output(session, state.config, req, name, accessor, content)
            provided.append(name)
    return response_data, provided


def _session(state: _State) -> aiohttp.ClientSession:
    if state.session is None or state.session.closed:
        raise EchoError(503, "SHUTTING_DOWN", "the extension is not running")
    return state.session


@dataclass(frozen=True)
class _Accessor:
    uri: str
    method: str
    headers: dict[str, str]


def _accessor_of(entry: Any) -> _Accessor | None:
    if not isinstance(entry, dict):
        return None
    accessor = entry.get("accessor")
    if not isinstance(accessor, dict):
        return None
    uri = accessor.get("uri")
    method = accessor.get("method")
    headers = accessor.get("headers") or {}
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise EchoError(400, "INVALID_FIELD", "an accessor has no usable uri")
    if not isinstance(method, str) or not method:
        raise EchoError(400, "INVALID_FIELD", "an accessor has no method")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise EchoError(400, "INVALID_FIELD", "accessor headers must map names to strings")
    return _Accessor(uri=uri, method=method.upper(), headers={str(k): v for k, v in headers.items()})


def _call_timeout(config: EchoConfig, req: _Request) -> aiohttp.ClientTimeout:
    remaining = req.remaining()
    if remaining <= 0:
        raise EchoError(504, "DEADLINE_EXCEEDED", "the deadline has passed")
    return aiohttp.ClientTimeout(total=min(config.outbound_timeout, remaining))


async def _read_input(
    session: aiohttp.ClientSession, config: EchoConfig, req: _Request, name: str, accessor: _Accessor
) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    try:
        async with session.request(
            accessor.method, accessor.uri, headers=accessor.headers, timeout=_call_timeout(config, req)
        ) as response:
            if response.status != 200:
                raise EchoError(502, "INPUT_UNREADABLE", f"input {name}: the accessor answered {response.status}")
            async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                size += len(chunk)
                digest.update(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EchoError(502, "INPUT_UNREADABLE", f"input {name}: {type(exc).__name__}") from None
    return {"size": size, "sha256": digest.hexdigest()}


async def _write_output(
    session: aiohttp.ClientSession,
    config: EchoConfig,
    req: _Request,
    name: str,
    accessor: _Accessor,
    content: bytes,
) -> None:
    headers = {"Content-Type": "application/json", **accessor.headers}
    try:
        async with session.request(
            accessor.method, accessor.uri, data=content, headers=headers, timeout=_call_timeout(config, req)
        ) as response:
            if not 200 <= response.status < 300:
                raise EchoError(502, "OUTPUT_UNWRITABLE", f"output {name}: the accessor answered {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EchoError(502, "OUTPUT_UNWRITABLE", f"output {name}: {type(exc).__name__}") from None


# ---- long-running: 202 now, reports later --------------------------------------------------------------------


async def _long_running(state: _State, req: _Request, *, delay: float) -> None:
    """RUNNING 50 %, wait ``delay`` seconds (the window in which a client can cancel), do the work, then
    SUCCEEDED 100 % (or FAILED, also when the deadline passes during the delay). Never raises (except
    cancellation)."""
    try:
        await _report(state, req, {"state": "RUNNING", "percentComplete": 50, "statusMessage": "echo is working"})
        try:
            if delay:
                await _delay(delay, req)
            response_data, provided = await _run(state, req)
        except EchoError as exc:
            await _report(state, req, {"state": "FAILED", "statusMessage": exc.message})
            return
        await _report(
            state,
            req,
            {
                "state": "SUCCEEDED",
                "percentComplete": 100,
                "statusMessage": "echo is done",
                "result": response_data,
                "providedOutputs": provided,
            },
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("long-running echo %s failed", req.execution_id)


async def _report(state: _State, req: _Request, fields: dict[str, Any]) -> bool:
    """POST one status report to ``statusUrl``; transient failures are retried a few times. True when accepted."""
    assert req.status_url is not None
    body = {"statusUpdateKey": req.status_update_key, "attempt": req.attempt, **fields}
    session = _session(state)
    for attempt in range(1, STATUS_REPORT_TRIES + 1):
        try:
            async with session.post(
                req.status_url, json=body, timeout=aiohttp.ClientTimeout(total=state.config.status_timeout)
            ) as response:
                if 200 <= response.status < 300:
                    return True
                transient = response.status >= 500 or response.status == 429
                logger.warning(
                    "status report %s for %s answered %s", fields["state"], req.execution_id, response.status
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            transient = True
            logger.warning("status report %s for %s failed: %s", fields["state"], req.execution_id, type(exc).__name__)
        if not transient or attempt == STATUS_REPORT_TRIES:
            return False
        await asyncio.sleep(state.config.status_retry_backoff * 2 ** (attempt - 1))
    return False
