"""JWT validation and RBAC at the edge: bad tokens never reach a service; claims headers cannot be forged."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

import aiohttp
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.execution.v1 import execution_service_pb2, execution_service_pb2_grpc
from gateway.envoy import RunningEnvoy
from services.platform.auth.dev_issuer import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from tests.component.gateway.conftest import Bearer, RecordingExecution, b64url, call

UPSTREAM_RQ = "cluster.catalog.upstream_rq_total"
JWT_DENIED = "http.exthub_gateway.jwt_authn.denied"
RBAC_DENIED = "http.exthub_gateway.rbac.denied"


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "user-1",
        "tid": "tenant-a",
        "oid": "user-1",
        "roles": ["Hub.Admin"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return base


def _encode(part: Mapping[str, object]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())


def unsigned(header: Mapping[str, object], payload: Mapping[str, object], signature: bytes = b"") -> str:
    return f"{_encode(header)}.{_encode(payload)}.{b64url(signature)}"


def hs256_with_public_key(issuer: DevIssuer) -> str:
    """The classic key-confusion attack: HMAC-sign with the (public) verification key as the secret."""
    public_pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    signing_input = unsigned(header, claims()).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


BAD_TOKENS: dict[str, tuple[Callable[[DevIssuer], str], int]] = {
    "expired": (lambda i: i.sign(claims(exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200)), 401),
    "not yet valid": (lambda i: i.sign(claims(nbf=int(time.time()) + 3600)), 401),
    "bad signature": (
        lambda i: jwt.encode(
            claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": i.kid}
        ),
        401,
    ),
    "tampered payload": (
        lambda i: (lambda t: f"{t[0]}.{unsigned({}, claims(roles=['Hub.Admin', 'x'])).split('.')[1]}.{t[2]}")(
            i.sign(claims()).split(".")
        ),
        401,
    ),
    "wrong issuer": (lambda i: i.sign(claims(iss="https://evil.example/")), 401),
    "wrong audience": (lambda i: i.sign(claims(aud="api://someone-else")), 403),
    "alg none": (lambda i: unsigned({"alg": "none", "typ": "JWT", "kid": i.kid}, claims()), 401),
    "HS256 with the public key": (hs256_with_public_key, 401),
    "unknown kid": (lambda i: i.sign(claims(), headers={"kid": "not-a-known-key"}), 401),
    "garbage": (lambda i: "not.a.jwt", 401),
    "no expiry": (lambda i: i.sign({k: v for k, v in claims().items() if k != "exp"}), 401),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_at_the_edge(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, issuer: DevIssuer, case: str
) -> None:
    make, status = BAD_TOKENS[case]
    headers = {"authorization": f"Bearer {make(issuer)}"}
    before_upstream, before_denied = await gateway.stat(UPSTREAM_RQ), await gateway.stat(JWT_DENIED)
    reply = await call(http, gateway, "GET", "/v1/extensions", headers=headers)
    assert reply.status == status, reply.body
    assert reply.body["code"] == (16 if status == 401 else 7)
    assert reply.reason == "TOKEN_INVALID"
    # native gRPC on the same listener gets the same refusal
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListExtensions(pb.ListExtensionsRequest(), metadata=tuple(headers.items()), timeout=5)
    expected = grpc.StatusCode.UNAUTHENTICATED if status == 401 else grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.code() == expected
    assert await gateway.stat(UPSTREAM_RQ) == before_upstream, "nothing may reach the service"
    assert await gateway.stat(JWT_DENIED) == before_denied + 2


async def test_missing_token_and_the_token_in_another_place(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    before = await gateway.stat(UPSTREAM_RQ)
    missing = await call(http, gateway, "GET", "/v1/extensions/x")
    assert (missing.status, missing.body["code"], missing.reason) == (401, 16, "TOKEN_INVALID")
    basic = await call(http, gateway, "GET", "/v1/extensions/x", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401
    assert await gateway.stat(UPSTREAM_RQ) == before
    ok = await call(http, gateway, "GET", "/v1/extensions", headers=bearer())
    assert ok.status == 200
    assert await gateway.stat(UPSTREAM_RQ) == before + 1


async def test_roles_are_checked_by_rbac_from_the_access_table(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    body = {"displayName": "X", "publisher": "Acme", "category": "media"}
    before, denied = await gateway.stat(UPSTREAM_RQ), await gateway.stat(RBAC_DENIED)
    wrong: tuple[tuple[str, ...], ...] = ((), ("Executions.Run",), ("Agent",), ("extensions.publish",))
    for roles in wrong:
        reply = await call(http, gateway, "POST", "/v1/extensions", json_body=body, headers=bearer(roles=roles))
        assert (reply.status, reply.body["code"], reply.reason) == (403, 7, "ROLE_REQUIRED"), roles
        assert reply.body["message"] == "RBAC: access denied"
    assert await gateway.stat(UPSTREAM_RQ) == before
    assert await gateway.stat(RBAC_DENIED) == denied + 4
    for n, roles in enumerate((("Extensions.Publish",), ("Hub.Admin",), ("Agent", "Extensions.Publish"))):
        reply = await call(
            http,
            gateway,
            "POST",
            "/v1/extensions",
            params={"extensionId": f"by-role-{n}"},
            json_body=body,
            headers=bearer(roles=roles),
        )
        assert reply.status == 200, (roles, reply.body)
    # per-policy stats show which rule allowed what
    allowed = await gateway.stat(
        "http.exthub_gateway.rbac.policy.exthub.catalog.v1.CatalogService.CreateExtension.allowed"
    )
    assert allowed == 3


async def test_internal_methods_are_not_reachable(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, recording_execution: RecordingExecution
) -> None:
    admin = bearer(roles=("Hub.Admin", "Agent"))
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        claim = channel.unary_unary(
            "/exthub.execution.v1.ExecutionService/ClaimExecution",
            request_serializer=execution_service_pb2.ClaimExecutionRequest.SerializeToString,
            response_deserializer=execution_service_pb2.ClaimExecutionResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await claim(execution_service_pb2.ClaimExecutionRequest(), metadata=tuple(admin.items()), timeout=5)
        assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)
        agent: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/exthub.agent.v1.AgentService/GetAgentInfo"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent(b"", metadata=tuple(admin.items()), timeout=5)
        assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)
    for method, path in (
        ("POST", "/exthub.execution.v1.ExecutionService/ClaimExecution"),
        ("POST", "/exthub.agent.v1.AgentService/Execute"),
        ("POST", "/v1/executions/x:claim"),
        ("GET", "/v1/agentInfo"),
    ):
        reply = await call(http, gateway, method, path, json_body={}, headers=admin)
        assert reply.status in (403, 404), (path, reply.status)
    assert recording_execution.metadata("ClaimExecution") == []


async def test_forged_claim_headers_are_stripped_and_claims_forwarded(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, recording_execution: RecordingExecution
) -> None:
    forged = {"x-exthub-tenant": "tenant-evil", "x-exthub-user": "root"}
    # PUBLIC method, no token: the forged headers are removed, nothing is added
    keys = await call(http, gateway, "GET", "/v1/signingKeys", headers=forged)
    assert keys.status == 200 and keys.body == {"keys": []}
    # PUBLIC method with a token: verified, forwarded, claims set from the token
    token = bearer(tenant="tenant-b", user="user-7")
    report = await call(
        http,
        gateway,
        "POST",
        "/v1/executions/e1:reportStatus",
        json_body={"statusUpdateKey": "k", "attempt": 1, "state": "SUCCEEDED"},
        headers={**forged, **token},
    )
    assert report.status == 200 and report.body["name"] == "executions/e1"
    # an invalid token on a PUBLIC method is still refused
    bad = await call(http, gateway, "GET", "/v1/signingKeys", headers={"authorization": "Bearer not.a.jwt"})
    assert bad.status == 401
    # AUTHENTICATED method through native gRPC with forged metadata
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        got = await stub.GetExecution(
            execution_service_pb2.GetExecutionRequest(name="executions/e2"),
            metadata=(*forged.items(), *token.items()),
            timeout=5,
        )
        assert got.name == "executions/e2"

    (anonymous,) = recording_execution.metadata("GetSigningKeys")
    assert "x-exthub-tenant" not in anonymous and "x-exthub-user" not in anonymous
    assert "authorization" not in anonymous
    for method in ("ReportExecutionStatus", "GetExecution"):
        (seen,) = recording_execution.metadata(method)
        assert seen["x-exthub-tenant"] == "tenant-b" and seen["x-exthub-user"] == "user-7", seen
        assert seen["authorization"] == token["authorization"], "the token is forwarded for the service to re-check"


async def test_native_grpc_callers_get_plain_grpc_errors(gateway: RunningEnvoy, bearer: Bearer) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        for metadata, code, message in (
            ((), grpc.StatusCode.UNAUTHENTICATED, "Jwt is missing"),
            (tuple(bearer().items()), grpc.StatusCode.PERMISSION_DENIED, "RBAC: access denied"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateExtension(pb.CreateExtensionRequest(), metadata=metadata, timeout=5)
            assert (caught.value.code(), caught.value.details()) == (code, message)
