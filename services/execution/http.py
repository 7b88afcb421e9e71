"""The execution service's HTTP port: the ``local/v1`` object server, plus the two public REST routes an
extension needs when no gateway is in front (local runs and tests):

- ``POST /v1/executions/{id}:reportStatus`` — the ``statusUrl`` callback (JSON as the gateway transcodes it, errors
  too: a ``google.rpc.Status``; only the status-update key authenticates here, no bearer token is read);
- ``GET /v1/signingKeys`` — the public JWKS.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from exthub.execution.v1 import execution_service_pb2
from services.execution import mapping
from services.execution.handlers import report
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.views import render
from services.objects.http import OBJECT_HANDLER_ARGS, create_object_app
from services.objects.local import LocalObjectProvider
from services.platform.errors import HubError, InvalidArgument
from services.platform.logging import get_logger

_log = get_logger("exthub.execution.http")
CONTEXT_KEY: web.AppKey[ExecutionContext] = web.AppKey("execution_context", ExecutionContext)
MAX_REPORT_BYTES = 1024 * 1024
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "FAILED_PRECONDITION": 400,
    "UNAVAILABLE": 503,
}


def _error(error: HubError) -> web.Response:
    """The error as the gateway answers the same route: the ``google.rpc.Status`` (with its ``ErrorInfo``) as JSON."""
    body = json_format.MessageToDict(error.to_status())
    return web.json_response(body, status=_HTTP_STATUS.get(error.code.name, 500))


@web.middleware
async def _hub_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except HubError as error:
        return _error(error)


def create_http_app(ctx: ExecutionContext, provider: LocalObjectProvider | None) -> web.Application:
    """The status callback and the JWKS, and the ``local/v1`` objects under ``/objects/`` when ``provider`` is the
    local one (``az-blob/v1`` accessors go to Blob Storage itself)."""
    app = web.Application(middlewares=[_hub_errors], client_max_size=MAX_REPORT_BYTES, handler_args=OBJECT_HANDLER_ARGS)
    app[CONTEXT_KEY] = ctx
    app.router.add_post("/v1/executions/{action}", _report_status)
    app.router.add_get("/v1/signingKeys", _signing_keys)
    if provider is not None:
        app.add_subapp("/objects/", create_object_app(provider))
    return app


async def _report_status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    execution, sep, verb = request.match_info["action"].partition(":")
    if sep != ":" or verb != "reportStatus":
        raise web.HTTPNotFound()
    execution_id = mapping.parse_execution_name(f"executions/{execution}")
    try:
        document: Any = json.loads(await request.read())
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise InvalidArgument("the body is not a JSON object")
    message = execution_service_pb2.ReportExecutionStatusRequest()
    try:
        json_format.ParseDict({**document, "name": f"executions/{execution_id}"}, message)
    except json_format.ParseError as exc:
        raise InvalidArgument("the body is not a valid status report", metadata={"detail": str(exc)[:200]}) from None
    updated = await report.report_status(ctx, execution_id, mapping.report_from_proto(message))
    execution_message = mapping.execution_to_proto(await render(ctx, updated))
    return web.json_response(json_format.MessageToDict(execution_message))


async def _signing_keys(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    return web.json_response(ctx.signing.jwks(), headers={"Cache-Control": "max-age=60"})
