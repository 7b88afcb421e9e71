"""TokenVerifier: every way a token can be wrong is UNAUTHENTICATED / TOKEN_INVALID."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from exthub.contract.jwk import ec_public_jwk, jwk_thumbprint
from exthub.contract.roles import AGENT, EXECUTIONS_RUN, HUB_ADMIN
from services.platform.auth.principal import Principal
from services.platform.auth.verifier import TokenVerifier
from services.platform.errors import Unauthenticated, Unavailable
from services.platform.settings import AuthSettings


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "user-1",
        "tid": "tenant-1",
        "oid": "user-1",
        "roles": [EXECUTIONS_RUN],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "ver": "2.0",
    }
    claims.update(overrides)
    return claims


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_valid_token_gives_principal(issuer: DevIssuer, auth_settings: AuthSettings) -> None:
    token = issuer.issue(tenant="t1", user="u1", roles=[HUB_ADMIN, AGENT])
    principal = await TokenVerifier(auth_settings).verify(token)
    assert principal == Principal(
        subject="u1", tenant="t1", user="u1", roles=frozenset({HUB_ADMIN, AGENT}), issuer=DEV_ISSUER
    )
    assert principal.is_admin


async def test_user_falls_back_to_sub_without_oid(issuer: DevIssuer, auth_settings: AuthSettings) -> None:
    claims = _claims(sub="s-9")
    del claims["oid"]
    principal = await TokenVerifier(auth_settings).verify(issuer.sign(claims))
    assert (principal.subject, principal.user, principal.is_admin) == ("s-9", "s-9", False)


async def test_token_within_clock_skew_is_accepted(issuer: DevIssuer, auth_settings: AuthSettings) -> None:
    now = int(time.time())
    token = issuer.sign(_claims(exp=now - 30, nbf=now + 30, iat=now + 30))
    assert (await TokenVerifier(auth_settings).verify(token)).tenant == "tenant-1"


def _none_token(issuer: DevIssuer) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": issuer.kid}).encode())
    return f"{header}.{_b64(json.dumps(_claims()).encode())}."


def _hs256_with_public_pem(issuer: DevIssuer) -> str:
    pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(_claims()).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _missing_exp(issuer: DevIssuer) -> str:
    claims = _claims()
    del claims["exp"]
    return issuer.sign(claims)


def _other_key_same_kid(issuer: DevIssuer) -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(_claims(), other, algorithm="ES256", headers={"kid": issuer.kid})


def _rs256_on_ec_kid(issuer: DevIssuer) -> str:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": issuer.kid})


def _no_tid(issuer: DevIssuer) -> str:
    claims = _claims()
    del claims["tid"]
    return issuer.sign(claims)


BAD_TOKENS: dict[str, Callable[[DevIssuer], str]] = {
    "missing exp": _missing_exp,
    "expired": lambda i: i.sign(_claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)),
    "not yet valid": lambda i: i.issue(tenant="t", user="u", roles=[], not_before=int(time.time()) + 3600),
    "issued in the future": lambda i: i.sign(_claims(iat=int(time.time()) + 3600)),
    "bad signature": _other_key_same_kid,
    "wrong issuer": lambda i: i.issue(tenant="t", user="u", roles=[], extra_claims={"iss": "https://evil"}),
    "wrong audience": lambda i: i.issue(tenant="t", user="u", roles=[], audience="api://other"),
    "alg none": _none_token,
    "HS256 with public key": _hs256_with_public_pem,
    "unknown kid": lambda i: jwt.encode(_claims(), i.private_key, algorithm="ES256", headers={"kid": "nope"}),
    "no kid": lambda i: jwt.encode(_claims(), i.private_key, algorithm="ES256"),
    "RS256 on EC key": _rs256_on_ec_kid,
    "no tenant": _no_tid,
    "roles not an array": lambda i: i.sign(_claims(roles=HUB_ADMIN)),
    "garbage": lambda i: "not-a-jwt",
    "empty": lambda i: "",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_token_is_unauthenticated(case: str, issuer: DevIssuer, auth_settings: AuthSettings) -> None:
    token = BAD_TOKENS[case](issuer)
    with pytest.raises(Unauthenticated) as caught:
        await TokenVerifier(auth_settings).verify(token)
    assert caught.value.reason == "TOKEN_INVALID"
    status = caught.value.to_status().SerializeToString()
    if token:
        assert token.encode() not in status
        assert token.split(".")[0].encode() not in status


async def test_algorithm_outside_allow_list_is_refused(issuer: DevIssuer, tmp_path: Path) -> None:
    settings = AuthSettings.development(tmp_path).model_copy(update={"allowed_algorithms": ["RS256"]})
    with pytest.raises(Unauthenticated):
        await TokenVerifier(settings).verify(issuer.issue(tenant="t", user="u", roles=[]))


async def test_unknown_kid_refetch_is_rate_limited(issuer: DevIssuer, auth_settings: AuthSettings) -> None:
    clock = _Clock()
    verifier = TokenVerifier(auth_settings, clock=clock)
    assert await verifier.verify(issuer.issue(tenant="t", user="u", roles=[]))
    # rotate: a second key appears in the JWKS file
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_jwk = ec_public_jwk(new_key.public_key())
    kid = jwk_thumbprint(new_jwk)
    token = jwt.encode(_claims(), new_key, algorithm="ES256", headers={"kid": kid})
    with pytest.raises(Unauthenticated):  # first unknown kid: refetch, still unknown
        await verifier.verify(token)
    keys = {"keys": [*issuer.jwks["keys"], {**new_jwk, "kid": kid, "alg": "ES256", "use": "sig"}]}
    auth_settings.jwks_file.write_text(json.dumps(keys))  # type: ignore[union-attr]
    clock.now += 0.5
    with pytest.raises(Unauthenticated):  # within 30 s (and before the file re-check): no refetch
        await verifier.verify(token)
    clock.now += 30
    assert (await verifier.verify(token)).tenant == "tenant-1"


async def test_jwks_uri_is_cached_and_refetched_once_for_unknown_kid(issuer: DevIssuer) -> None:
    hits = 0

    async def jwks(_request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response(issuer.jwks)

    app = web.Application()
    app.router.add_get("/keys", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        settings = AuthSettings(
            issuers=[DEV_ISSUER], audiences=[DEV_AUDIENCE], jwks_uri=f"http://127.0.0.1:{port}/keys"
        )
        clock = _Clock()
        verifier = TokenVerifier(settings, clock=clock)
        token = issuer.issue(tenant="t", user="u", roles=[])
        await verifier.verify(token)
        await verifier.verify(token)
        assert hits == 1
        unknown = jwt.encode(_claims(), issuer.private_key, algorithm="ES256", headers={"kid": "rotated"})
        for _ in range(3):
            with pytest.raises(Unauthenticated):
                await verifier.verify(unknown)
        assert hits == 2
        clock.now += 301  # cache expired
        await verifier.verify(token)
        assert hits == 3
    finally:
        await runner.cleanup()


async def test_unreachable_jwks_without_cache_is_unavailable(issuer: DevIssuer) -> None:
    settings = AuthSettings(issuers=[DEV_ISSUER], audiences=[DEV_AUDIENCE], jwks_uri="http://127.0.0.1:1/keys")
    with pytest.raises(Unavailable):
        await TokenVerifier(settings).verify(issuer.issue(tenant="t", user="u", roles=[]))


async def test_verified_tokens_are_cached_but_a_removed_key_stops_them(
    issuer: DevIssuer, auth_settings: AuthSettings
) -> None:
    clock = _Clock()
    verifier = TokenVerifier(auth_settings, clock=clock)
    token = issuer.issue(tenant="t", user="u", roles=[AGENT])
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first, "a verified token is served from the cache"
    assert auth_settings.jwks_file is not None
    auth_settings.jwks_file.write_text(json.dumps({"keys": []}))
    clock.now += 30
    assert await verifier.verify(token) is first, "within the cache window the token is still honoured"
    clock.now += 31
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)
