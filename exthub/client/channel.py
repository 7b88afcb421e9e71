"""The client's gRPC channel: target parsing, service config (retries), keepalive, auth and default deadlines.

Retries are declared in the gRPC service config, so the gRPC core does them (with backoff and retry
throttling) and only for methods that are safe to repeat: those whose ``google.api.http`` binding is ``GET``
(Get*, List*, Search*, WatchExecution, GetSigningKeys). Create/Continue/Cancel/Retry and every other
mutation are not retried by the channel: a call that reached the server before the connection broke may
have taken effect, and repeating it would run an extension twice or answer FAILED_PRECONDITION. The service
config cannot look at a request's fields, so the idempotent create (same ``request_id`` → same execution)
is retried by :meth:`exthub.client.HubClient.create_execution` itself, which always sends a ``request_id``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from google.api import annotations_pb2
from google.protobuf import descriptor

from exthub.catalog.v1 import catalog_service_pb2
from exthub.client.tokens import TokenProvider
from exthub.execution.v1 import execution_service_pb2

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "CallDefaults",
    "Target",
    "channel_options",
    "interceptors",
    "open_channel",
    "retryable_methods",
    "service_config",
]

DEFAULT_TIMEOUT_SECONDS = 30.0
USER_AGENT = "exthub-client/0.1"
# The services accept pings every 20 s or more (services/platform/server.py); 30 s stays clear of GOAWAY.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
PUBLIC_SERVICES: tuple[descriptor.ServiceDescriptor, ...] = (
    catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"],
    execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"],
)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


@dataclass(frozen=True)
class Target:
    """Where to dial: ``host:port`` and whether to use TLS.

    Accepts the gateway URL (``http://127.0.0.1:8080``, ``https://hub.example.com``), ``grpc://host:port`` /
    ``grpcs://…``, or a bare ``host:port`` of a service (plain text). Envoy passes native gRPC on the same port
    it serves REST on, so the gateway URL works for gRPC as it is.
    """

    address: str
    secure: bool

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse a URL or ``host:port``; :class:`ValueError` with a one-line reason if it is neither."""
        raw = text.strip()
        if not raw:
            raise ValueError("the hub URL is empty")
        if "://" in raw:
            parts = urlsplit(raw)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https", "grpc", "grpcs"):
                raise ValueError(f"unsupported scheme in {raw!r}: use http, https, grpc, grpcs or host:port")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"the hub URL {raw!r} must not have a path or query")
            secure = scheme in ("https", "grpcs")
        else:
            parts = urlsplit(f"//{raw}")
            secure = False
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"invalid port in {raw!r}") from None
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in {raw!r}")
        if port is None:
            if "://" not in raw:
                raise ValueError(f"{raw!r} needs a port (host:port) or a scheme (http://…)")
            port = 443 if secure else 80
        shown = f"[{host}]" if ":" in host else host
        return cls(address=f"{shown}:{port}", secure=secure)

    def __str__(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.address}"


def retryable_methods(services: tuple[descriptor.ServiceDescriptor, ...] = PUBLIC_SERVICES) -> dict[str, list[str]]:
    """Service full name → the methods safe to retry: those bound to HTTP ``GET`` (reads, watch, keys)."""
    safe: dict[str, list[str]] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(annotations_pb2.http) and options.Extensions[annotations_pb2.http].get:
                safe.setdefault(service.full_name, []).append(method.name)
    return safe


def service_config(
    *,
    max_attempts: int = 4,
    initial_backoff_seconds: float = 0.1,
    max_backoff_seconds: float = 2.0,
    backoff_multiplier: float = 2.0,
) -> dict[str, Any]:
    """The gRPC service config: retry UNAVAILABLE with backoff on the safe methods only, with throttling."""
    names = [
        {"service": service, "method": method} for service, methods in retryable_methods().items() for method in methods
    ]
    return {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff_seconds}s",
                    "maxBackoff": f"{max_backoff_seconds}s",
                    "backoffMultiplier": backoff_multiplier,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        # stop retrying when more than half of recent calls fail (a hub that is down, not a blip)
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }


def channel_options(config: dict[str, Any] | None = None) -> list[tuple[str, int | str]]:
    """Channel arguments: service config with retries, keepalive, message limits, user agent."""
    return [
        ("grpc.service_config", json.dumps(config if config is not None else service_config())),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.primary_user_agent", USER_AGENT),
    ]


class CallDefaults:
    """Adds ``authorization: Bearer …`` from the provider (unless the caller set one) and a default deadline.

    Unary calls without a timeout get ``default_timeout``; streams (WatchExecution) get
    ``default_stream_timeout``, which is None by default because a watch lasts as long as the execution.
    """

    def __init__(
        self,
        token_provider: TokenProvider | None,
        *,
        default_timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        default_stream_timeout: float | None = None,
    ) -> None:
        self.token_provider = token_provider
        self.default_timeout = default_timeout
        self.default_stream_timeout = default_stream_timeout

    async def apply(self, details: grpc.aio.ClientCallDetails, *, stream: bool) -> grpc.aio.ClientCallDetails:
        """The call details with the bearer token and, when the caller gave none, the default timeout."""
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self.token_provider is not None and metadata.get("authorization") is None:
            metadata.add("authorization", f"Bearer {await self.token_provider.token()}")
        default = self.default_stream_timeout if stream else self.default_timeout
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout if details.timeout is not None else default,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class UnaryDefaultsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """:class:`CallDefaults` for unary calls (grpc.aio takes one interceptor object per call kind)."""

    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> _Response | grpc.aio.UnaryUnaryCall[_Request, _Response]:
        return await continuation(await self._defaults.apply(client_call_details, stream=False), request)


class StreamDefaultsInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """:class:`CallDefaults` for server-streaming calls (WatchExecution)."""

    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryStreamCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> AsyncIterator[_Response] | grpc.aio.UnaryStreamCall[_Request, _Response]:
        return await continuation(await self._defaults.apply(client_call_details, stream=True), request)


def interceptors(defaults: CallDefaults) -> list[grpc.aio.ClientInterceptor]:
    """The client interceptors that apply ``defaults`` to unary and server-streaming calls."""
    return [UnaryDefaultsInterceptor(defaults), StreamDefaultsInterceptor(defaults)]


def open_channel(
    target: Target,
    *,
    token_provider: TokenProvider | None,
    default_timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    default_stream_timeout: float | None = None,
    config: dict[str, Any] | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target`` with the options and interceptor above (call inside a running loop)."""
    defaults = CallDefaults(
        token_provider, default_timeout=default_timeout, default_stream_timeout=default_stream_timeout
    )
    options = channel_options(config)
    if target.secure:
        return grpc.aio.secure_channel(
            target.address, grpc.ssl_channel_credentials(), options=options, interceptors=interceptors(defaults)
        )
    return grpc.aio.insecure_channel(target.address, options=options, interceptors=interceptors(defaults))
