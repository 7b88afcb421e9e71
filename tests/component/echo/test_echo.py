"""The sample extension echo over real HTTP, with real signatures, a fake hub and real local/v1 URLs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from jwt.api_jws import PyJWS

from services.echo import EchoConfig, SignatureVerifier, StaticJwksSource, create_echo_app
from services.echo.app import STATE_KEY
from services.objects.port import ObjectRef
from tests.component.echo.conftest import Echo, Objects, new_key, request_claims, rfc3339

TTL = timedelta(minutes=5)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---- signatures ----------------------------------------------------------------------------------------------


async def test_valid_signature_echoes(echo: Echo) -> None:
    body = echo.body(requestParameters={"greeting": "hello", "n": 3})
    status, answer = await echo.post("/execute", body)
    assert status == 200
    assert answer == {
        "responseData": {"echo": {"greeting": "hello", "n": 3}, "executionId": body["executionId"], "attempt": 1},
        "providedOutputs": [],
    }


async def test_no_parameters_echo_an_empty_object(echo: Echo) -> None:
    body = echo.body()
    del body["requestParameters"]
    status, answer = await echo.post("/execute", body)
    assert status == 200
    assert answer["responseData"]["echo"] == {}


async def test_missing_signature_is_401(echo: Echo) -> None:
    status, answer = await echo.post("/execute", echo.body(), sign=False)
    assert status == 401
    assert answer["error"]["reason"] == "SIGNATURE_INVALID"


async def test_tampered_body_is_401(echo: Echo) -> None:
    raw = json.dumps(echo.body(requestParameters={"amount": 1})).encode()
    signature = echo.key.sign(raw)
    tampered = raw.replace(b'"amount": 1', b'"amount": 9')
    assert tampered != raw
    assert (await echo.post("/execute", tampered, signature=signature))[0] == 401
    # even a whitespace change breaks it: the signature covers the exact bytes
    assert (await echo.post("/execute", raw + b" ", signature=signature))[0] == 401
    assert (await echo.post("/execute", raw, signature=signature))[0] == 200


async def test_unknown_kid_is_401_after_one_refetch(echo: Echo) -> None:
    stranger = new_key("unknown-kid")
    raw = json.dumps(echo.body()).encode()
    assert (await echo.post("/execute", raw))[0] == 200
    fetches = echo.jwks.fetches
    status, _ = await echo.post("/execute", raw, signature=stranger.sign(raw))
    assert status == 401
    assert echo.jwks.fetches == fetches + 1


async def test_wrong_key_with_known_kid_is_401(echo: Echo) -> None:
    impostor = new_key(echo.key.kid)  # same kid, different private key
    raw = json.dumps(echo.body()).encode()
    assert (await echo.post("/execute", raw, signature=impostor.sign(raw)))[0] == 401


async def test_rotated_key_is_picked_up_from_the_jwks(echo: Echo) -> None:
    raw = json.dumps(echo.body()).encode()
    assert (await echo.post("/execute", raw))[0] == 200
    rotated = new_key("test-es256-2")
    echo.jwks.keys.append(rotated.jwk())
    assert (await echo.post("/execute", raw, signature=rotated.sign(raw)))[0] == 200
    assert (await echo.post("/execute", raw))[0] == 200  # the previous key still verifies


async def test_alg_none_is_401(echo: Echo) -> None:
    raw = json.dumps(echo.body()).encode()
    header = b64url(json.dumps({"alg": "none", "kid": echo.key.kid}).encode())
    status, answer = await echo.post("/execute", raw, signature=f"{header}..")
    assert status == 401
    assert answer["error"]["reason"] == "SIGNATURE_INVALID"
    fake = b64url(b"\x00" * 64)
    assert (await echo.post("/execute", raw, signature=f"{header}..{fake}"))[0] == 401


async def test_hmac_algorithms_are_401(echo: Echo) -> None:
    """An HS256 signature keyed with the public JWK (the classic algorithm-confusion attack) is refused."""
    raw = json.dumps(echo.body()).encode()
    secret = json.dumps(echo.key.jwk()).encode()
    header = b64url(json.dumps({"alg": "HS256", "kid": echo.key.kid, "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(raw)}".encode()
    mac = b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())
    assert (await echo.post("/execute", raw, signature=f"{header}..{mac}"))[0] == 401


@pytest.mark.parametrize(
    "signature",
    ["garbage", "a.b.c", "..", "x..y", "%%%..%%%", "e30..e30"],
)
async def test_malformed_signatures_are_401(echo: Echo, signature: str) -> None:
    assert (await echo.post("/execute", echo.body(), signature=signature))[0] == 401


async def test_attached_payload_is_not_accepted(echo: Echo) -> None:
    raw = json.dumps(echo.body()).encode()
    token = PyJWS().encode(raw, echo.key.private, algorithm="ES256", headers={"kid": echo.key.kid})
    assert (await echo.post("/execute", raw, signature=token))[0] == 401


async def test_unencoded_detached_payload_rfc7797_is_accepted(echo: Echo) -> None:
    raw = json.dumps(echo.body()).encode()
    token = PyJWS().encode(
        raw,
        echo.key.private,
        algorithm="ES256",
        headers={"kid": echo.key.kid, **request_claims(raw)},
        is_payload_detached=True,
    )
    assert token.split(".")[1] == ""
    assert (await echo.post("/execute", raw, signature=token))[0] == 200
    assert (await echo.post("/execute", raw + b"\n", signature=token))[0] == 401


async def test_rs256_keys_work() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private.public_key())), "kid": "rsa-1", "alg": "RS256", "use": "sig"}
    app = create_echo_app(StaticJwksSource({"keys": [jwk]}))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        raw = json.dumps(
            {"executionId": "e1", "extensionId": "echo", "attempt": 1, "requestParameters": {"x": 1}}
        ).encode()
        token = PyJWS().encode(raw, private, algorithm="RS256", headers={"kid": "rsa-1", **request_claims(raw)})
        header, _, sig = token.split(".")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(
                server.make_url("/execute"), data=raw, headers={"Exthub-Signature": f"{header}..{sig}"}
            ) as response:
                assert response.status == 200
            # an ES256 header naming the RSA key is refused (alg and key type must agree)
            es = ec.generate_private_key(ec.SECP256R1())
            token = PyJWS().encode(raw, es, algorithm="ES256", headers={"kid": "rsa-1", **request_claims(raw)})
            header, _, sig = token.split(".")
            async with session.post(
                server.make_url("/execute"), data=raw, headers={"Exthub-Signature": f"{header}..{sig}"}
            ) as response:
                assert response.status == 401
    finally:
        await server.close()


async def test_jwks_unavailable_is_503_not_a_crash() -> None:
    class Broken:
        async def fetch(self) -> dict[str, object]:
            raise OSError("hub down")

    verifier = SignatureVerifier(Broken())
    app = create_echo_app(verifier)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(server.make_url("/execute"), data=b"{}", headers={"Exthub-Signature": "e30..e30"}) as resp,
        ):
            # the header is parsed first; a bad alg is 401 without touching the keys
            assert resp.status == 401
        key = new_key("k")
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(
                server.make_url("/execute"), data=b"{}", headers={"Exthub-Signature": key.sign(b"{}")}
            ) as resp,
        ):
            assert resp.status == 503
    finally:
        await server.close()


async def test_validate_is_signed_too(echo: Echo) -> None:
    assert (await echo.post("/validate", echo.body(), sign=False))[0] == 401


async def test_healthz(echo: Echo) -> None:
    async with echo.session.get(f"{echo.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "SERVING"}


async def test_signed_but_not_json_is_400(echo: Echo) -> None:
    assert (await echo.post("/execute", b"not json"))[0] == 400
    assert (await echo.post("/execute", b"[1, 2]"))[0] == 400


# ---- behaviours ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 500, 429, 400])
async def test_fail_with(echo: Echo, code: int) -> None:
    status, answer = await echo.post("/execute", echo.body(requestParameters={"failWith": code}))
    assert status == code
    assert "validationErrors" not in answer
    assert answer["error"]["code"] == code


async def test_fail_with_400_and_invalid_gives_validation_errors(echo: Echo) -> None:
    status, answer = await echo.post("/execute", echo.body(requestParameters={"failWith": 400, "invalid": True}))
    assert status == 400
    assert answer == {
        "validationErrors": [{"code": "INVALID", "message": "the request asked to be invalid", "field": "invalid"}]
    }


@pytest.mark.parametrize("bad", [200, 99, "500", True, 1000])
async def test_fail_with_must_be_an_error_status(echo: Echo, bad: object) -> None:
    status, answer = await echo.post("/execute", echo.body(requestParameters={"failWith": bad}))
    assert status == 400
    assert answer["validationErrors"][0]["field"] == "failWith"


async def test_fail_times_then_succeed(echo: Echo) -> None:
    statuses = []
    for attempt in (1, 2, 3):
        status, answer = await echo.post("/execute", echo.body(attempt=attempt, requestParameters={"failTimes": 2}))
        statuses.append(status)
    assert statuses == [503, 503, 200]
    assert answer["responseData"]["attempt"] == 3


async def test_delay_is_honoured(echo: Echo) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, answer = await echo.post("/execute", echo.body(requestParameters={"delaySeconds": 0.3}))
    assert status == 200
    assert loop.time() - started >= 0.3
    assert answer["responseData"]["echo"] == {"delaySeconds": 0.3}


async def test_delay_is_cut_by_the_deadline(echo: Echo) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = rfc3339(datetime.now(UTC) + timedelta(seconds=0.3))
    status, answer = await echo.post("/execute", echo.body(deadline=deadline, requestParameters={"delaySeconds": 60}))
    elapsed = loop.time() - started
    assert status == 504
    assert answer["error"]["reason"] == "DEADLINE_EXCEEDED"
    assert 0.2 <= elapsed < 5


async def test_past_deadline_with_delay_answers_at_once(echo: Echo) -> None:
    deadline = rfc3339(datetime.now(UTC) - timedelta(seconds=1))
    status, _ = await echo.post("/execute", echo.body(deadline=deadline, requestParameters={"delaySeconds": 60}))
    assert status == 504


async def test_validate(echo: Echo) -> None:
    assert await echo.post("/validate", echo.body(validateOnly=True)) == (200, {})
    status, answer = await echo.post("/validate", echo.body(validateOnly=True, requestParameters={"invalid": True}))
    assert status == 400
    assert len(answer["validationErrors"]) == 1
    assert answer["validationErrors"][0]["field"] == "invalid"
    assert answer["validationErrors"][0]["code"]
    assert answer["validationErrors"][0]["message"]


async def test_long_running_reports_progress_then_success(echo: Echo) -> None:
    body = echo.body(attempt=2, requestParameters={"longRunning": True, "tag": "x"})
    status, _ = await echo.post("/execute", body)
    assert status == 202
    await asyncio.wait_for(echo.hub.terminal.wait(), 10)
    running, succeeded = echo.hub.reports
    assert running == {
        "statusUpdateKey": "status-key-0123456789",
        "attempt": 2,
        "state": "RUNNING",
        "percentComplete": 50,
        "statusMessage": running["statusMessage"],
    }
    assert succeeded["statusUpdateKey"] == "status-key-0123456789"
    assert succeeded["attempt"] == 2
    assert succeeded["state"] == "SUCCEEDED"
    assert succeeded["percentComplete"] == 100
    assert succeeded["result"] == {
        "echo": {"longRunning": True, "tag": "x"},
        "executionId": body["executionId"],
        "attempt": 2,
    }
    assert succeeded["providedOutputs"] == []


async def test_long_running_needs_a_status_url(echo: Echo) -> None:
    body = echo.body(requestParameters={"longRunning": True})
    del body["statusUrl"]
    status, answer = await echo.post("/execute", body)
    assert status == 400
    assert answer["validationErrors"][0]["field"] == "statusUrl"


async def test_long_running_with_unreachable_hub_does_not_crash(echo: Echo) -> None:
    # a status URL nobody listens on: the reports fail (and are logged), the app does not
    body = echo.body(statusUrl="http://127.0.0.1:9/nothing", requestParameters={"longRunning": True})
    status, _ = await echo.post("/execute", body)
    assert status == 202
    # the app keeps serving while the background task fails and logs
    assert (await echo.post("/execute", echo.body()))[0] == 200


# ---- objects through real local/v1 URLs ----------------------------------------------------------------------


async def test_inputs_are_read_and_outputs_written(echo: Echo, objects: Objects) -> None:
    provider = objects.provider
    execution = "9d2f4b4a-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
    payloads = {"data.csv": os.urandom(300_000), "empty.txt": b""}
    inputs = {}
    for name, payload in payloads.items():
        ref = ObjectRef(execution, "input", name)
        await provider.write_object(ref, _chunks(payload))
        accessor = await provider.download_accessor(ref, TTL)
        inputs[name] = {"definition": {"name": name, "required": True}, "accessor": accessor.to_json()}
    inputs["not-provided"] = {"definition": {"name": "not-provided", "required": False}}
    outputs = {
        "result.json": {
            "definition": {"name": "result.json"},
            "accessor": (await provider.upload_accessor(ObjectRef(execution, "output", "result.json"), TTL)).to_json(),
        },
        "undeclared-accessor": {"definition": {"name": "undeclared-accessor"}},
    }
    params = {"greeting": "hi", "n": [1, 2]}
    status, answer = await echo.post(
        "/execute", echo.body(executionId=execution, inputs=inputs, outputs=outputs, requestParameters=params)
    )
    assert status == 200, answer
    assert answer["responseData"]["inputs"] == {
        name: {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        for name, payload in payloads.items()
    }
    assert answer["providedOutputs"] == ["result.json"]
    # the output is readable through a GET URL and holds the JSON of requestParameters
    get = await provider.download_accessor(ObjectRef(execution, "output", "result.json"), TTL)
    async with echo.session.get(get.uri) as response:
        assert response.status == 200
        assert json.loads(await response.read()) == params


async def test_long_running_writes_outputs_before_reporting(echo: Echo, objects: Objects) -> None:
    provider = objects.provider
    execution = "9d2f4b4a-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
    ref = ObjectRef(execution, "output", "out")
    outputs = {"out": {"definition": {"name": "out"}, "accessor": (await provider.upload_accessor(ref, TTL)).to_json()}}
    params = {"longRunning": True}
    status, _ = await echo.post("/execute", echo.body(executionId=execution, outputs=outputs, requestParameters=params))
    assert status == 202
    await asyncio.wait_for(echo.hub.terminal.wait(), 10)
    assert echo.hub.reports[-1]["state"] == "SUCCEEDED"
    assert echo.hub.reports[-1]["providedOutputs"] == ["out"]
    assert await provider.size(ref) == len(json.dumps(params, sort_keys=True, separators=(",", ":")))


async def test_a_refused_accessor_is_a_502(echo: Echo, objects: Objects) -> None:
    provider = objects.provider
    ref = ObjectRef("e1", "input", "missing")
    accessor = (await provider.download_accessor(ref, TTL)).to_json()  # never uploaded → 404
    status, answer = await echo.post("/execute", echo.body(inputs={"missing": {"accessor": accessor}}))
    assert status == 502
    assert answer["error"]["reason"] == "INPUT_UNREADABLE"
    # an upload URL used as a read accessor is refused by local/v1 (403) and reported the same way
    put = (await provider.upload_accessor(ref, TTL)).to_json()
    wrong = {**put, "method": "GET"}
    assert (await echo.post("/execute", echo.body(inputs={"missing": {"accessor": wrong}})))[0] == 502


async def test_accessor_headers_are_applied(echo: Echo) -> None:
    seen: list[str | None] = []

    async def capture(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("x-ms-blob-type"))
        await request.read()
        return aiohttp.web.Response(status=201)

    app = aiohttp.web.Application()
    app.router.add_put("/blob", capture)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        accessor = {
            "uri": str(server.make_url("/blob")),
            "method": "PUT",
            "headers": {"x-ms-blob-type": "BlockBlob"},
            "expireTime": rfc3339(datetime.now(UTC) + TTL),
            "accessMode": "WRITE_ONLY",
        }
        status, answer = await echo.post("/execute", echo.body(outputs={"o": {"accessor": accessor}}))
        assert status == 200
        assert answer["providedOutputs"] == ["o"]
        assert seen == ["BlockBlob"]
    finally:
        await server.close()


async def test_shutdown_cancels_background_work() -> None:
    """A long-running task still waiting on its hub is cancelled cleanly when the app stops."""
    signer = new_key("k1")
    blocked = asyncio.Event()
    release = asyncio.Event()

    async def slow_report(request: aiohttp.web.Request) -> aiohttp.web.Response:
        blocked.set()
        await release.wait()
        return aiohttp.web.json_response({})

    hub_app = aiohttp.web.Application()
    hub_app.router.add_post("/report", slow_report)
    hub = TestServer(hub_app, host="127.0.0.1", port=0)
    await hub.start_server()
    app = create_echo_app(StaticJwksSource({"keys": [signer.jwk()]}), config=EchoConfig(status_timeout=30))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        raw = json.dumps(
            {
                "executionId": "e1",
                "extensionId": "echo",
                "attempt": 1,
                "requestParameters": {"longRunning": True},
                "statusUrl": str(hub.make_url("/report")),
                "statusUpdateKey": "k",
            }
        ).encode()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(server.make_url("/execute"), data=raw, headers={"Exthub-Signature": signer.sign(raw)}) as r,
        ):
            assert r.status == 202
        await asyncio.wait_for(blocked.wait(), 10)
        tasks = set(app[STATE_KEY].tasks)
        assert len(tasks) == 1
        await asyncio.wait_for(server.close(), 10)
        assert all(task.done() for task in tasks)
    finally:
        release.set()
        await server.close()
        await hub.close()


async def _chunks(payload: bytes) -> AsyncIterator[bytes]:
    yield payload
