"""The HTTP face of ``local/v1``: serves signed object URLs (the gateway routes ``/objects/v1/`` here).

- ``PUT`` with a write-only URL streams the body, byte for byte as sent, to a temp file and renames it into place
  (201; 413 past the limit; 403 ``OBJECT_SEALED`` for an input that is sealed).
- ``GET`` with a read-only URL streams the file (200; 404 before it is uploaded — for an input: before it is sealed).
- Wrong method for the URL, expired, tampered or unsigned → 403; other methods → 405; any other path → 404.
Every error is a small JSON body ``{"error": {"code", "status", "reason", "message"}}``.

Bodies are stored as sent, so the server that runs this app must not decode request bodies: run it as the root
app (it sets ``handler_args``) or give the root app / runner :data:`OBJECT_HANDLER_ARGS`. If a body arrives
decoded anyway (its length differs from ``Content-Length``) the upload is refused with 415 and nothing is kept.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from aiohttp import web

from services.objects.local import (
    CHUNK_BYTES,
    BodyLengthMismatch,
    LocalObjectProvider,
    ObjectSealed,
    ObjectTooLarge,
    UrlRejected,
)
from services.objects.port import ObjectRef

logger = logging.getLogger(__name__)

PROVIDER_KEY: web.AppKey[LocalObjectProvider] = web.AppKey("object_provider", LocalObjectProvider)

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    500: "INTERNAL",
}
_ALLOWED_METHODS = ("GET", "PUT")

OBJECT_HANDLER_ARGS: Mapping[str, Any] = MappingProxyType({"auto_decompress": False})
"""aiohttp server options the app needs (``web.Application(handler_args=…)`` or ``web.AppRunner(app, **…)``):
request bodies are never decoded, so a ``Content-Encoding: gzip`` upload is kept as sent."""


def error_response(status: int, reason: str, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error body every non-2xx answer of this app carries."""
    body = {
        "error": {
            "code": status,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            "reason": reason,
            "message": message,
        }
    }
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, "NOT_FOUND" if exc.status == 404 else "HTTP_ERROR", exc.reason)
    except UrlRejected as exc:
        return error_response(exc.status, exc.reason, exc.message)


def create_object_app(provider: LocalObjectProvider) -> web.Application:
    """An aiohttp app serving exactly the signed ``/objects/v1/...`` URLs of ``provider``."""
    app = web.Application(middlewares=[_json_errors], handler_args=OBJECT_HANDLER_ARGS)
    app[PROVIDER_KEY] = provider
    # One catch-all route: the raw path is parsed (and rejected) by the provider itself, before any file access.
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER_KEY]
    raw_path = request.rel_url.raw_path
    if not raw_path.startswith("/objects/v1/"):
        raise UrlRejected(404, "NOT_FOUND", "not found")
    if request.method not in _ALLOWED_METHODS:
        return error_response(
            405, "METHOD_NOT_ALLOWED", "only GET and PUT are allowed", headers={"Allow": ", ".join(_ALLOWED_METHODS)}
        )
    ref = await provider.verify(request.method, raw_path, list(request.rel_url.query.items()))
    if request.method == "PUT":
        return await _put(request, provider, ref)
    return await _get(request, provider, ref)


async def _put(request: web.Request, provider: LocalObjectProvider, ref: ObjectRef) -> web.StreamResponse:
    limit = provider.max_object_bytes
    if request.content_length is not None and request.content_length > limit:
        return error_response(413, "OBJECT_TOO_LARGE", f"objects are limited to {limit} bytes")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            yield chunk

    try:
        stored = await provider.receive_upload(ref, body(), declared_bytes=request.content_length)
    except ObjectTooLarge:
        return error_response(413, "OBJECT_TOO_LARGE", f"objects are limited to {limit} bytes")
    except ObjectSealed:
        return error_response(403, "OBJECT_SEALED", "the input is sealed: this URL no longer accepts uploads")
    except BodyLengthMismatch:
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            return error_response(
                415, "CONTENT_ENCODING_NOT_KEPT", "this server would decode the Content-Encoding; nothing was stored"
            )
        return error_response(400, "BODY_LENGTH_MISMATCH", "the body does not match its Content-Length")
    logger.info("object stored", extra={"object": ref.key, "size": stored.size})
    return web.json_response(
        {"size": stored.size, "sha256": stored.sha256}, status=201, headers={"Cache-Control": "no-store"}
    )


async def _get(request: web.Request, provider: LocalObjectProvider, ref: ObjectRef) -> web.StreamResponse:
    reader = await provider.open_object(ref)
    if reader is None:
        return error_response(404, "OBJECT_NOT_FOUND", "the object has not been uploaded")
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        response.content_length = reader.size
        await response.prepare(request)
        async for chunk in reader.chunks():
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await reader.aclose()
