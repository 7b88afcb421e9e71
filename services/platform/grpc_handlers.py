"""What server interceptors share: a method handler rewrapped around its behaviour, built once per method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

__all__ = ["Behaviour", "Deserializer", "WrappedHandlers", "rewrap"]

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


class WrappedHandlers:
    """Each method's wrapped handler, built by ``wrap(method, handler)`` on its first call and reused while the
    servicer hands out the same handler (wrapping per call costs a few closures and handler objects each time)."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._known: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler) -> Handler:
        """The wrapped ``handler`` of ``method``."""
        known = self._known.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._known[method] = (handler, wrapped)
        return wrapped
