"""Fixtures for the echo extension: a test signing key and its JWKS server, a fake hub, a local/v1 object server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.api_jws import PyJWS

from services.echo import EchoConfig, HttpJwksSource, SignatureVerifier, create_echo_app
from services.objects.http import create_object_app
from services.objects.local import LocalObjectProvider

TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    alg: str = "ES256"

    def jwk(self) -> dict[str, Any]:
        jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def sign(self, body: bytes, *, headers: dict[str, Any] | None = None, claims: dict[str, Any] | None = None) -> str:
        """A detached JWS (RFC 7515 Appendix F): ``<header>..<signature>``, with the claims the hub puts in the
        protected header for ``body`` (:func:`request_claims`) unless ``claims`` are given."""
        protected = {"kid": self.kid, **(request_claims(body) if claims is None else claims), **(headers or {})}
        token = PyJWS().encode(body, self.private, algorithm=self.alg, headers=protected)
        header, _, signature = token.split(".")
        return f"{header}..{signature}"


def request_claims(body: bytes, *, ttl: int = 300, issued: float | None = None) -> dict[str, Any]:
    """What the hub binds into an extension request's signature (``SigningKeyRing.sign_extension_request``)."""
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    document = document if isinstance(document, dict) else {}
    now = int(time.time() if issued is None else issued)
    return {
        "aud": f"extensions/{document.get('extensionId', 'echo')}",
        "iss": "test-hub",
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "execution": f"executions/{document.get('executionId', '')}",
        "attempt": document.get("attempt", 1),
    }


def new_key(kid: str) -> SigningKey:
    return SigningKey(kid=kid, private=ec.generate_private_key(ec.SECP256R1()))


@dataclass
class Jwks:
    url: str
    keys: list[dict[str, Any]]
    fetches: int = 0


@dataclass
class Hub:
    """A fake hub endpoint standing in for ``statusUrl``."""

    url: str
    reports: list[dict[str, Any]] = field(default_factory=list)
    terminal: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Objects:
    provider: LocalObjectProvider


@dataclass
class Echo:
    url: str
    session: aiohttp.ClientSession
    key: SigningKey
    jwks: Jwks
    hub: Hub

    def body(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "executionId": "9d2f4b4a-5e6f-4a1b-8c2d-3e4f5a6b7c8d",
            "extensionId": "echo",
            "extensionVersion": "1.0.0",
            "profile": "default",
            "priority": "NORMAL",
            "attempt": 1,
            "validateOnly": False,
            "requestParameters": {},
            "labels": {"team": "qa"},
            "executor": {"tenantId": "tenant-1", "userId": "user-1"},
            "inputs": {},
            "outputs": {},
            "services": {},
            "deadline": rfc3339(datetime.now(UTC) + timedelta(seconds=60)),
            "statusUrl": self.hub.url,
            "statusUpdateKey": "status-key-0123456789",
        }
        body.update(overrides)
        return body

    async def post(
        self,
        path: str,
        body: dict[str, Any] | bytes,
        *,
        signature: str | None = None,
        sign: bool = True,
    ) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["Exthub-Signature"] = signature
        elif sign:
            headers["Exthub-Signature"] = self.key.sign(raw)
        async with self.session.post(f"{self.url}{path}", data=raw, headers=headers) as response:
            return response.status, await response.json(content_type=None)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def key() -> SigningKey:
    return new_key("test-es256-1")


@pytest.fixture
async def jwks(key: SigningKey) -> AsyncIterator[Jwks]:
    state = Jwks(url="", keys=[key.jwk()])

    async def signing_keys(request: web.Request) -> web.Response:
        state.fetches += 1
        return web.json_response({"keys": state.keys})

    app = web.Application()
    app.router.add_get("/v1/signingKeys", signing_keys)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url("/v1/signingKeys"))
    try:
        yield state
    finally:
        await server.close()


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    state = Hub(url="")

    async def report(request: web.Request) -> web.Response:
        document = await request.json()
        state.reports.append(document)
        if document.get("state") in ("SUCCEEDED", "FAILED"):
            state.terminal.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/executions/{execution}/report", report)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url("/v1/executions/9d2f4b4a/report"))
    try:
        yield state
    finally:
        await server.close()


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[Objects]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    provider = await LocalObjectProvider.open(tmp_path / "hub-data", f"http://127.0.0.1:{port}")
    runner = web.AppRunner(create_object_app(provider))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield Objects(provider)
    finally:
        await runner.cleanup()


@pytest.fixture
async def echo(key: SigningKey, jwks: Jwks, hub: Hub) -> AsyncIterator[Echo]:
    verifier = SignatureVerifier(HttpJwksSource(jwks.url, timeout=5), min_refetch_interval=0)
    app = create_echo_app(verifier, config=EchoConfig(outbound_timeout=10, status_timeout=5))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            yield Echo(url=str(server.make_url("")).rstrip("/"), session=session, key=key, jwks=jwks, hub=hub)
    finally:
        await server.close()
