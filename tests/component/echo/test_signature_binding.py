"""The hub's request signature binds audience and time (``SigningKeyRing.sign_extension_request``), and echo
refuses it for another extension, after its expiry, before it is valid, or a second time."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exthub.contract.signatures import verify_body_signature
from services.echo import EchoConfig, StaticJwksSource, create_echo_app
from services.echo.signature import SignatureInvalid, SignatureVerifier
from services.execution.signing import REQUEST_SIGNATURE_TTL_SECONDS, SigningKeyRing

EXECUTION = "executions/9d2f4b4a-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
TIMEOUT = aiohttp.ClientTimeout(total=10)


def body(extension: str = "echo", attempt: int = 1) -> bytes:
    document = {
        "executionId": EXECUTION.removeprefix("executions/"),
        "extensionId": extension,
        "extensionVersion": "1.0.0",
        "attempt": attempt,
        "requestParameters": {"n": 1},
    }
    return json.dumps(document).encode()


def header_of(signature: str) -> dict[str, Any]:
    encoded = signature.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return decoded


@pytest.fixture
def ring(tmp_path: Path) -> SigningKeyRing:
    return SigningKeyRing.load_or_create(tmp_path / "signing", hub_id="https://hub.example")


def sign(ring: SigningKeyRing, raw: bytes, *, audience: str = "extensions/echo", now: datetime | None = None) -> str:
    return ring.sign_extension_request(
        raw, audience=audience, execution=EXECUTION, attempt=1, now=now or datetime.now(UTC)
    )


@pytest.fixture
async def echo_url(ring: SigningKeyRing) -> AsyncIterator[str]:
    """echo serving ``extensions/echo`` only (as ``exthub up`` starts it, for echo and echo-plain)."""
    config = EchoConfig(audiences=frozenset({"extensions/echo"}))
    server = TestServer(create_echo_app(StaticJwksSource(ring.jwks()), config=config), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def post(url: str, raw: bytes, signature: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{url}/execute", data=raw, headers={"Exthub-Signature": signature}) as response,
    ):
        return response.status, await response.json()


def test_the_signature_carries_audience_time_execution_and_attempt(ring: SigningKeyRing) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    raw = body()
    signature = sign(ring, raw, now=now)
    header = verify_body_signature(signature, raw, ring.jwks())  # still a detached JWS over the exact body
    assert header == header_of(signature)
    assert header["aud"] == "extensions/echo" and header["iss"] == "https://hub.example"
    assert header["iat"] == int(now.timestamp())
    assert header["exp"] - header["iat"] == REQUEST_SIGNATURE_TTL_SECONDS
    assert (header["execution"], header["attempt"]) == (EXECUTION, 1)
    assert header["jti"] != header_of(sign(ring, raw, now=now))["jti"]


async def test_echo_accepts_a_fresh_signature_once(echo_url: str, ring: SigningKeyRing) -> None:
    raw = body()
    signature = sign(ring, raw)
    status, answer = await post(echo_url, raw, signature)
    assert status == 200, answer
    status, answer = await post(echo_url, raw, signature)
    assert (status, answer["error"]["message"]) == (401, "the signature was used before")


async def test_echo_refuses_a_signature_for_another_extension(echo_url: str, ring: SigningKeyRing) -> None:
    """A request for ``extensions/other``, forwarded by that extension to echo, is refused."""
    raw = body(extension="other")
    status, answer = await post(echo_url, raw, sign(ring, raw, audience="extensions/other"))
    assert (status, answer["error"]["message"]) == (401, "the signature is for another extension")


async def test_echo_refuses_an_audience_that_is_not_the_bodys(ring: SigningKeyRing) -> None:
    server = TestServer(create_echo_app(StaticJwksSource(ring.jwks())), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        raw = body(extension="echo")
        status, answer = await post(url, raw, sign(ring, raw, audience="extensions/other"))
        assert status == 401 and "another extension" in answer["error"]["message"]
        status, _ = await post(url, raw, sign(ring, raw))
        assert status == 200
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("shift", "message"),
    [
        (timedelta(seconds=-(REQUEST_SIGNATURE_TTL_SECONDS + 120)), "the signature has expired"),
        (timedelta(minutes=10), "the signature is not valid yet"),
    ],
)
async def test_echo_refuses_a_signature_outside_its_lifetime(
    echo_url: str, ring: SigningKeyRing, shift: timedelta, message: str
) -> None:
    raw = body()
    status, answer = await post(echo_url, raw, sign(ring, raw, now=datetime.now(UTC) + shift))
    assert (status, answer["error"]["message"]) == (401, message)


async def test_echo_refuses_a_body_only_signature(echo_url: str, ring: SigningKeyRing) -> None:
    raw = body()
    status, answer = await post(echo_url, raw, ring.sign_body(raw))
    assert (status, answer["error"]["message"]) == (401, "the signature names no audience")


async def test_the_replay_cache_is_bounded_and_forgets_expired_ids(ring: SigningKeyRing) -> None:
    clock = [datetime.now(UTC).timestamp()]
    verifier = SignatureVerifier(
        StaticJwksSource(ring.jwks()), replay_cache_size=3, leeway=0, wall_clock=lambda: clock[0]
    )
    raw = body()
    first = sign(ring, raw, now=datetime.fromtimestamp(clock[0], UTC))
    await verifier.verify(first, raw)
    with pytest.raises(SignatureInvalid, match="used before"):
        await verifier.verify(first, raw)
    for _ in range(3):
        await verifier.verify(sign(ring, raw, now=datetime.fromtimestamp(clock[0], UTC)), raw)
    assert len(verifier._seen) == 3
    clock[0] += REQUEST_SIGNATURE_TTL_SECONDS + 1
    await verifier.verify(sign(ring, raw, now=datetime.fromtimestamp(clock[0], UTC)), raw)
    assert len(verifier._seen) == 1, "expired ids are forgotten"
