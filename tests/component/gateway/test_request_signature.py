"""Through the gateway: the signature the hub puts on a real extension call binds the extension, the execution,
the attempt and a short lifetime, and it cannot be replayed — neither to echo again nor to another extension."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from exthub.contract.roles import EXECUTIONS_RUN
from gateway.envoy import RunningEnvoy
from services.echo import EchoConfig, HttpJwksSource, create_echo_app
from services.execution.signing import REQUEST_SIGNATURE_TTL_SECONDS
from tests.component.echo.test_signature_binding import header_of
from tests.component.gateway.conftest import Bearer, call
from tests.support.hub import Hub
from tests.support.profiles import azure_profile, hub_profile

__all__ = ["azure_profile", "hub_profile"]  # both profiles: these tests drive executions

RUN = (EXECUTIONS_RUN,)
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def _post(url: str, raw: bytes, signature: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{url}/execute", data=raw, headers={"Exthub-Signature": signature}) as response,
    ):
        return response.status


async def test_a_real_request_signature_is_bound_and_cannot_be_replayed(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        headers=bearer(roles=RUN),
        json_body={"extensionVersion": "extensions/echo-plain/versions/latest", "request": {"n": 1}},
    )
    assert created.body["state"] == "SUCCEEDED", created.body
    (sent,) = hub.calls_of(created.body["name"])
    claims = header_of(sent.signature)
    assert claims["aud"] == "extensions/echo-plain"
    assert (claims["execution"], claims["attempt"]) == (created.body["name"], 1)
    assert claims["exp"] - claims["iat"] == REQUEST_SIGNATURE_TTL_SECONDS
    assert await _post(hub.echo_url, sent.body, sent.signature) == 401, "a second use is refused"
    # another extension (here: an echo that serves extensions/echo only) refuses it as not its own
    other = create_echo_app(
        HttpJwksSource(f"{hub.execution.http_url}/v1/signingKeys"),
        config=EchoConfig(audiences=frozenset({"extensions/echo"})),
    )
    server = TestServer(other, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        assert await _post(str(server.make_url("")).rstrip("/"), sent.body, sent.signature) == 401
    finally:
        await server.close()
