"""JWT validation and RBAC at the edge, in front of the real hub: bad tokens never reach a service (Envoy's
upstream counters and the services' own record of the calls they received both stay put); claim headers sent by
a client are stripped; internal RPCs are not routed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from exthub.contract.roles import AGENT, EXECUTIONS_RUN, EXTENSIONS_PUBLISH, HUB_ADMIN
from exthub.execution.v1 import agent_task_service_pb2, execution_service_pb2, execution_service_pb2_grpc
from gateway.envoy import RunningEnvoy
from tests.component.gateway.conftest import Bearer, ServiceCalls, b64url, call
from tests.support.hub import Hub

UPSTREAM_RQ = "cluster.catalog.upstream_rq_total"
CLUSTERS = ("catalog", "execution", "objects")
RUN = (EXECUTIONS_RUN,)
ECHO = "extensions/echo-plain/versions/1.0.0"
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
        "roles": [HUB_ADMIN],
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


BAD_TOKENS: dict[str, Callable[[DevIssuer], str]] = {
    "expired": lambda i: i.sign(claims(exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200)),
    "not yet valid": lambda i: i.sign(claims(nbf=int(time.time()) + 3600)),
    "bad signature": lambda i: jwt.encode(
        claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": i.kid}
    ),
    "tampered payload": lambda i: (
        lambda t: f"{t[0]}.{unsigned({}, claims(roles=['Hub.Admin', 'x'])).split('.')[1]}.{t[2]}"
    )(i.sign(claims()).split(".")),
    "wrong issuer": lambda i: i.sign(claims(iss="https://evil.example/")),
    "wrong audience": lambda i: i.sign(claims(aud="api://someone-else")),
    "alg none": lambda i: unsigned({"alg": "none", "typ": "JWT", "kid": i.kid}, claims()),
    "HS256 with the public key": hs256_with_public_key,
    "unknown kid": lambda i: i.sign(claims(), headers={"kid": "not-a-known-key"}),
    "garbage": lambda i: "not.a.jwt",
    "no expiry": lambda i: i.sign({k: v for k, v in claims().items() if k != "exp"}),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_at_the_edge(
    http: aiohttp.ClientSession,
    gateway: RunningEnvoy,
    issuer: DevIssuer,
    hub: Hub,
    service_calls: ServiceCalls,
    case: str,
) -> None:
    headers = {"authorization": f"Bearer {BAD_TOKENS[case](issuer)}"}
    metadata = tuple(headers.items())
    reached, denied = len(service_calls), await gateway.stat(JWT_DENIED)
    upstream = {cluster: await gateway.stat(f"cluster.{cluster}.upstream_rq_total") for cluster in CLUSTERS}
    for method, path in (("GET", "/v1/extensions"), ("GET", "/v1/executions/x"), ("POST", "/v1/executions")):
        reply = await call(http, gateway, method, path, headers=headers, json_body={} if method == "POST" else None)
        assert (reply.status, reply.code, reply.reason) == (401, "UNAUTHENTICATED", "TOKEN_INVALID"), (path, reply.body)
        assert reply.headers["www-authenticate"].startswith("Bearer"), path
    # native gRPC on the same listener gets the same refusal
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListExtensions(pb.ListExtensionsRequest(), metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(service_calls) == reached, f"nothing may reach a service: {service_calls.calls[reached:]}"
    for cluster, before in upstream.items():
        assert await gateway.stat(f"cluster.{cluster}.upstream_rq_total") == before, cluster
    assert await gateway.stat(JWT_DENIED) == denied + 4
    # defence in depth: the service, called directly (skipping the gateway), refuses the token as well
    async with grpc.aio.insecure_channel(hub.catalog.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListExtensions(pb.ListExtensionsRequest(), metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_missing_token_and_the_token_in_another_place(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    before, reached = await gateway.stat(UPSTREAM_RQ), len(service_calls)
    missing = await call(http, gateway, "GET", "/v1/extensions/x")
    assert (missing.status, missing.code, missing.reason) == (401, "UNAUTHENTICATED", "TOKEN_INVALID")
    assert missing.body["message"] == "Jwt is missing"
    basic = await call(http, gateway, "GET", "/v1/extensions/x", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401
    raw_token = bearer()["authorization"].removeprefix("Bearer ")
    in_query = await call(http, gateway, "GET", "/v1/extensions", params={"access_token": raw_token})
    assert (in_query.status, in_query.reason) == (400, "INVALID_REQUEST"), "only the Authorization header counts"
    assert await gateway.stat(UPSTREAM_RQ) == before and len(service_calls) == reached
    ok = await call(http, gateway, "GET", "/v1/extensions", headers=bearer())
    assert ok.status == 200
    assert await gateway.stat(UPSTREAM_RQ) == before + 1
    assert [path for path, _ in service_calls.calls[reached:]] == ["/exthub.catalog.v1.CatalogService/ListExtensions"]


async def test_roles_are_checked_by_rbac_from_the_access_table(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    body = {"displayName": "X", "publisher": "Acme", "category": "media"}
    before, denied, reached = await gateway.stat(UPSTREAM_RQ), await gateway.stat(RBAC_DENIED), len(service_calls)
    wrong: tuple[tuple[str, ...], ...] = ((), (EXECUTIONS_RUN,), (AGENT,), ("extensions.publish",))
    for roles in wrong:
        reply = await call(http, gateway, "POST", "/v1/extensions", json_body=body, headers=bearer(roles=roles))
        assert (reply.status, reply.code, reply.reason) == (403, "PERMISSION_DENIED", "ROLE_REQUIRED"), roles
        assert reply.body["message"] == "RBAC: access denied"
    run = await call(
        http, gateway, "POST", "/v1/executions", json_body={"extensionVersion": ECHO}, headers=bearer(roles=(AGENT,))
    )
    assert (run.status, run.reason) == (403, "ROLE_REQUIRED")
    assert await gateway.stat(UPSTREAM_RQ) == before
    assert len(service_calls) == reached, "a wrong role never reaches a service"
    assert await gateway.stat(RBAC_DENIED) == denied + 5
    for n, roles in enumerate(((EXTENSIONS_PUBLISH,), (HUB_ADMIN,), (AGENT, EXTENSIONS_PUBLISH))):
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
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    admin = bearer(roles=(HUB_ADMIN, AGENT))
    reached = len(service_calls)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        for method, request in (
            ("ClaimExecution", agent_task_service_pb2.ClaimExecutionRequest(name="executions/x", attempt=1)),
            ("SignExtensionRequest", agent_task_service_pb2.SignExtensionRequestRequest(name="executions/x")),
            (
                "BatchClaimExecutions",
                agent_task_service_pb2.BatchClaimExecutionsRequest(
                    requests=[agent_task_service_pb2.ClaimExecutionRequest(name="executions/x", attempt=1)]
                ),
            ),
            (
                "BatchReportExecutionStatus",
                agent_task_service_pb2.BatchReportExecutionStatusRequest(
                    requests=[execution_service_pb2.ReportExecutionStatusRequest(name="executions/x", attempt=1)]
                ),
            ),
        ):
            rpc: grpc.aio.UnaryUnaryMultiCallable[Any, bytes] = channel.unary_unary(
                f"/exthub.execution.v1.AgentTaskService/{method}", request_serializer=type(request).SerializeToString
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await rpc(request, metadata=tuple(admin.items()), timeout=5)
            assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED), method
        agent: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/exthub.agent.v1.AgentService/GetAgentInfo"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent(b"", metadata=tuple(admin.items()), timeout=5)
        assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)
    for method, path in (
        ("POST", "/exthub.execution.v1.AgentTaskService/ClaimExecution"),
        ("POST", "/exthub.execution.v1.AgentTaskService/BatchReportExecutionStatus"),
        ("POST", "/exthub.execution.v1.ExecutionService/ClaimExecution"),
        ("POST", "/exthub.agent.v1.AgentService/Execute"),
        ("POST", "/v1/executions/x:claim"),
        ("GET", "/v1/agentInfo"),
    ):
        reply = await call(http, gateway, method, path, json_body={}, headers=admin)
        assert reply.status in (403, 404), (path, reply.status)
    assert len(service_calls) == reached, f"internal RPCs are not routed: {service_calls.calls[reached:]}"


async def test_forged_claim_headers_are_stripped_and_ignored(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    """``x-exthub-tenant``/``x-exthub-user`` sent by a client never reach a service; the token's claims do."""
    run_b = bearer(roles=RUN, tenant="tenant-b", user="user-7")
    created = await call(http, gateway, "POST", "/v1/executions", json_body={"extensionVersion": ECHO}, headers=run_b)
    assert created.status == 200 and created.body["tenant"] == "tenant-b", created.body
    name = created.body["name"]
    forged = {"x-exthub-tenant": "tenant-b", "x-exthub-user": "user-7"}
    # tenant-a claiming tenant-b in a header still cannot see tenant-b's execution (REST and native gRPC)
    token_a = bearer(tenant="tenant-a", user="user-1")
    stolen = await call(http, gateway, "GET", f"/v1/{name}", headers={**forged, **token_a})
    assert (stolen.status, stolen.reason) == (404, "EXECUTION_NOT_FOUND")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetExecution(
                execution_service_pb2.GetExecutionRequest(name=name),
                metadata=(*forged.items(), *token_a.items()),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # PUBLIC method, no token: the forged headers are removed, nothing is added
    keys = await call(http, gateway, "GET", "/v1/signingKeys", headers=forged)
    assert keys.status == 200 and keys.body["keys"]
    # an invalid token on a PUBLIC method is still refused
    bad = await call(http, gateway, "GET", "/v1/signingKeys", headers={"authorization": "Bearer not.a.jwt"})
    assert bad.status == 401

    (anonymous,) = service_calls.metadata("GetSigningKeys")
    assert "x-exthub-tenant" not in anonymous and "x-exthub-user" not in anonymous
    assert "authorization" not in anonymous
    seen = service_calls.metadata("GetExecution")
    assert len(seen) == 2
    for metadata in seen:
        assert metadata["x-exthub-tenant"] == "tenant-a" and metadata["x-exthub-user"] == "user-1", metadata
        assert metadata["authorization"] == token_a["authorization"], "the token is forwarded for the service"


async def test_native_grpc_callers_get_plain_grpc_errors(gateway: RunningEnvoy, bearer: Bearer) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        for metadata, code, message in (
            ((), grpc.StatusCode.UNAUTHENTICATED, "Jwt is missing"),
            (tuple(bearer().items()), grpc.StatusCode.PERMISSION_DENIED, "RBAC: access denied"),
            (
                tuple(bearer(audience="api://someone-else").items()),
                grpc.StatusCode.UNAUTHENTICATED,
                "Audiences in Jwt are not allowed",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateExtension(pb.CreateExtensionRequest(), metadata=metadata, timeout=5)
            assert (caught.value.code(), caught.value.details()) == (code, message)
