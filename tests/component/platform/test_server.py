"""The gRPC edge on a real loopback server: auth, access rules, rich errors, streaming, health, drain."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.errors import ERROR_DOMAIN, call_status, error_info, field_violations
from exthub.contract.roles import AGENT, EXTENSIONS_PUBLISH, HUB_ADMIN
from services.platform.auth.access import (
    AccessRule,
    authenticated,
    current_principal,
    require_principal,
    require_roles,
)
from services.platform.auth.verifier import TokenVerifier
from services.platform.errors import InvalidArgument, NotFound
from services.platform.server import RunningServer, serve_until_signalled, start_grpc_server
from services.platform.settings import Settings

SERVICE = "exthub.test.v1.TestService"
TIMEOUT = 5.0


def _m(name: str) -> str:
    return f"/{SERVICE}/{name}"


@dataclass
class _Probe:
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)


def _identity(data: bytes) -> bytes:
    return data


def _register(probe: _Probe) -> Any:
    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        principal = current_principal()
        who = f"{principal.tenant}/{principal.user}" if principal else "anonymous"
        return who.encode() + b":" + request

    async def invalid(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise InvalidArgument.field("extension.display_name", "must be at most 63 characters")

    async def boom(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise RuntimeError("db password=hunter2 at /srv/secret")

    async def abort(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, "handler aborted")

    async def slow(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        probe.slow_started.set()
        await probe.release_slow.wait()
        return b"slow done"

    async def stream(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        tenant = require_principal().tenant
        for i in range(3):
            yield f"{tenant}-{i}".encode()

    async def stream_fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        yield b"first"
        raise NotFound("gone", reason="EXECUTION_NOT_FOUND")

    async def stream_writer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        for i in range(2):
            await context.write(f"w{i}".encode())

    async def collect(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b"+".join([r async for r in requests])

    def unary(fn: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_identity, response_serializer=_identity)

    def unary_stream(fn: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_stream_rpc_method_handler(fn, request_deserializer=_identity, response_serializer=_identity)

    handlers = {
        "Echo": unary(echo),
        "Publish": unary(echo),
        "Invalid": unary(invalid),
        "Boom": unary(boom),
        "Abort": unary(abort),
        "Slow": unary(slow),
        "Unlisted": unary(echo),
        "Stream": unary_stream(stream),
        "StreamFail": unary_stream(stream_fail),
        "StreamWriter": unary_stream(stream_writer),
        "Collect": grpc.stream_unary_rpc_method_handler(
            collect, request_deserializer=_identity, response_serializer=_identity
        ),
    }

    def register(server: grpc.aio.Server) -> Sequence[str]:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]

    return register


RULES: dict[str, AccessRule] = {
    **{_m(n): authenticated() for n in ("Echo", "Invalid", "Boom", "Abort", "Slow", "Stream", "StreamFail")},
    _m("StreamWriter"): authenticated(),
    _m("Collect"): authenticated(),
    _m("Publish"): require_roles(EXTENSIONS_PUBLISH),
    "/grpc.health.v1.Health/Check": require_roles(EXTENSIONS_PUBLISH),
}


@dataclass
class Hub:
    running: RunningServer
    channel: grpc.aio.Channel
    issuer: DevIssuer
    probe: _Probe

    def token(self, *roles: str, tenant: str = "t1") -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.issuer.issue(tenant=tenant, user='u1', roles=roles)}"),)

    async def call(self, method: str, body: bytes = b"hi", metadata: Any = None) -> bytes:
        callable_ = self.channel.unary_unary(_m(method), request_serializer=_identity, response_deserializer=_identity)
        return await callable_(body, timeout=TIMEOUT, metadata=metadata)

    def unary_stream(self, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
        return self.channel.unary_stream(_m(method), request_serializer=_identity, response_deserializer=_identity)

    def stream_unary(self, method: str) -> grpc.aio.StreamUnaryMultiCallable[bytes, bytes]:
        return self.channel.stream_unary(_m(method), request_serializer=_identity, response_deserializer=_identity)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = Settings.local_defaults(tmp_path, host="127.0.0.1")
    issuer = DevIssuer.load_or_create(tmp_path)
    probe = _Probe()
    running = await start_grpc_server(
        name="test",
        settings=settings,
        port=0,
        register=_register(probe),
        verifier=TokenVerifier(settings.auth),
        access_rules=RULES,
    )
    channel = grpc.aio.insecure_channel(running.address)
    try:
        yield Hub(running, channel, issuer, probe)
    finally:
        await channel.close()
        await running.stop(0)


def _status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = call_status(err)
    assert status is not None, "no grpc-status-details-bin"
    return status


def _error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info = error_info(_status(err))
    assert info is not None, "no ErrorInfo"
    assert info.domain == ERROR_DOMAIN
    return info


async def test_valid_token_reaches_handler_with_principal(hub: Hub) -> None:
    assert await hub.call("Echo", metadata=hub.token()) == b"t1/u1:hi"
    assert await hub.call("Echo", metadata=(("authorization", "bearer " + hub.token()[0][1][7:]),))


@pytest.mark.parametrize(
    "metadata",
    [None, (("authorization", "Bearer not-a-jwt"),), (("authorization", "Basic dTpw"),)],
    ids=["no token", "garbage token", "not bearer"],
)
async def test_missing_or_bad_token_is_unauthenticated(hub: Hub, metadata: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("Echo", metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(caught.value).reason == "TOKEN_INVALID"


async def test_bad_token_refused_even_on_public_method(hub: Hub) -> None:
    stub = health_pb2_grpc.HealthStub(hub.channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT, metadata=(("authorization", "Bearer x"),))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_roles(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("Publish", metadata=hub.token(AGENT))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = _error_info(caught.value)
    assert (info.reason, dict(info.metadata)) == ("ROLE_REQUIRED", {"requiredRoles": EXTENSIONS_PUBLISH})
    assert await hub.call("Publish", metadata=hub.token(EXTENSIONS_PUBLISH)) == b"t1/u1:hi"
    assert await hub.call("Publish", metadata=hub.token(HUB_ADMIN)) == b"t1/u1:hi"


async def test_health_check_protected_by_custom_table(hub: Hub) -> None:
    stub = health_pb2_grpc.HealthStub(hub.channel)
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(request, timeout=TIMEOUT, metadata=hub.token())
    assert _error_info(caught.value).reason == "ROLE_REQUIRED"
    for role in (EXTENSIONS_PUBLISH, HUB_ADMIN):
        response = await stub.Check(request, timeout=TIMEOUT, metadata=hub.token(role))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_hub_error_becomes_rich_status(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("Invalid", metadata=hub.token())
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = _error_info(err)
    assert (info.reason, dict(info.metadata)) == ("INVALID_FIELD", {"field": "extension.display_name"})
    assert field_violations(_status(err)) == [("extension.display_name", "must be at most 63 characters")]


async def test_unexpected_exception_is_internal_without_leak(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("Boom", metadata=hub.token())
    err = caught.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    everything = repr(err.trailing_metadata()) + (err.debug_error_string() or "") + str(err)
    for leaked in ("hunter2", "RuntimeError", "/srv/secret", "Traceback"):
        assert leaked not in everything
    assert _error_info(err).reason == "INTERNAL"


async def test_handler_abort_passes_through(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("Abort", metadata=hub.token())
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.details() == "handler aborted"


async def test_unlisted_method_is_denied(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("Unlisted", metadata=hub.token(HUB_ADMIN))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _error_info(caught.value).reason == "METHOD_NOT_ALLOWED"


async def test_nonexistent_method_is_unimplemented(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hub.call("DoesNotExist", metadata=hub.token())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_streaming_through_the_wrapper(hub: Hub) -> None:
    call = hub.unary_stream("Stream")(b"", timeout=TIMEOUT, metadata=hub.token(tenant="t9"))
    assert [m async for m in call] == [b"t9-0", b"t9-1", b"t9-2"]
    writer = hub.unary_stream("StreamWriter")(b"", timeout=TIMEOUT, metadata=hub.token())
    assert [m async for m in writer] == [b"w0", b"w1"]
    collect = hub.stream_unary("Collect")
    assert await collect(iter([b"a", b"b"]), timeout=TIMEOUT, metadata=hub.token()) == b"a+b"


async def test_stream_error_after_first_message(hub: Hub) -> None:
    call = hub.unary_stream("StreamFail")(b"", timeout=TIMEOUT, metadata=hub.token())
    assert await call.read() == b"first"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _error_info(caught.value).reason == "EXECUTION_NOT_FOUND"


async def test_stream_without_token_is_unauthenticated(hub: Hub) -> None:
    call = hub.unary_stream("Stream")(b"", timeout=TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(caught.value).reason == "TOKEN_INVALID"


async def test_health_watch_and_reflection_need_no_token(hub: Hub) -> None:
    watch = health_pb2_grpc.HealthStub(hub.channel).Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    stub = reflection_pb2_grpc.ServerReflectionStub(hub.channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT)
    response = await call.read()
    names = {s.name for s in response.list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    call.cancel()


async def test_graceful_stop_reports_not_serving_then_drains(hub: Hub) -> None:
    slow = asyncio.ensure_future(hub.call("Slow", metadata=hub.token()))
    await asyncio.wait_for(hub.probe.slow_started.wait(), TIMEOUT)
    watch = health_pb2_grpc.HealthStub(hub.channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT
    )
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.ensure_future(hub.running.stop(TIMEOUT))
    assert (await asyncio.wait_for(watch.read(), TIMEOUT)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not slow.done()
    assert not stopping.done()
    watch.cancel()
    hub.probe.release_slow.set()
    assert await asyncio.wait_for(slow, TIMEOUT) == b"slow done"
    await asyncio.wait_for(stopping, TIMEOUT)


async def test_sigterm_drains_and_returns(hub: Hub) -> None:
    before = signal.getsignal(signal.SIGTERM)
    serving = asyncio.ensure_future(serve_until_signalled(hub.running, grace=TIMEOUT))
    for _ in range(1000):
        if signal.getsignal(signal.SIGTERM) is not before:
            break
        await asyncio.sleep(0)
    assert signal.getsignal(signal.SIGTERM) is not before, "SIGTERM handler not installed"
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serving, TIMEOUT)
    assert hub.running.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert signal.getsignal(signal.SIGTERM) is before
