"""What server interceptors share: a method handler rewrapped around its behaviour, built once per method."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

__all__ = ["Behaviour", "Deserializer", "WrappingServerInterceptor", "rewrap", "serve_stream"]

Behaviour = Callable[..., Any]
Deserializer = Callable[[bytes], Any] | None
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def _same(deserializer: Deserializer) -> Deserializer:
    return deserializer


def rewrap(
    handler: Handler,
    *,
    unary: Callable[[Behaviour], Behaviour],
    stream: Callable[[Behaviour], Behaviour],
    unary_request_deserializer: Callable[[Deserializer], Deserializer] = _same,
) -> Handler:
    """``handler`` with its behaviour wrapped by ``unary`` (calls answering one response) or ``stream`` (calls
    answering a stream); a single request's deserializer goes through ``unary_request_deserializer``."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary),
            request_deserializer=unary_request_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary(handler.stream_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream),
            request_deserializer=unary_request_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            stream(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


async def serve_stream(result: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Run what a streaming-response behaviour returned: write each message of an async generator (or async or
    plain iterable), or await a coroutine that writes with ``context.write`` itself."""
    if inspect.isasyncgen(result) or isinstance(result, AsyncIterator):
        async for message in result:
            await context.write(message)
    elif inspect.isawaitable(result):
        await result
    elif result is not None:
        for message in result:
            await context.write(message)


class WrappingServerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's handler with :meth:`_wrap`, built on the method's first call and
    reused while the servicer hands out the same handler (wrapping per call costs a few closures and handler
    objects each time). An unknown method passes through as None: gRPC answers UNIMPLEMENTED."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._known.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._known[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        """``handler`` of ``method`` wrapped by this interceptor."""
        raise NotImplementedError
