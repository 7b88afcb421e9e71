"""DevIssuer and DevTokens: persistent key, RFC 7638 kid, JWKS file, Azure-shaped tokens, first start, cache."""

from __future__ import annotations

import json
import multiprocessing
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jwt
import pytest

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, DevIssuer, DevTokens, service_tokens
from exthub.contract.jwk import jwk_thumbprint
from exthub.contract.roles import AGENT


def _kid_of(data_dir: str) -> str:
    return DevIssuer.load_or_create(Path(data_dir)).kid


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 section 3.1: the example RSA key
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
            "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
            "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
            "kEgU8awapJzKnqDKgw"
        ),
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_key_and_jwks_are_persisted(tmp_path: Path) -> None:
    first = DevIssuer.load_or_create(tmp_path)
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert first.key_path == tmp_path / "keys" / "dev-issuer.key.pem"
    jwks = json.loads(first.jwks_path.read_text())
    assert jwks == first.jwks
    (key,) = jwks["keys"]
    assert key["kid"] == first.kid == jwk_thumbprint(key)
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert "d" not in key
    assert DevIssuer.load_or_create(tmp_path).kid == first.kid


def test_issued_token_is_azure_shaped(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path)
    token = issuer.issue(tenant="t1", user="u1", roles=[AGENT], ttl_seconds=120, extra_claims={"azp": "cli"})
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES256", issuer.kid)
    claims = jwt.decode(
        token, issuer.private_key.public_key(), algorithms=["ES256"], audience=DEV_AUDIENCE, issuer=DEV_ISSUER
    )
    assert claims["tid"] == "t1"
    assert claims["oid"] == claims["sub"] == "u1"
    assert claims["roles"] == [AGENT]
    assert claims["ver"] == "2.0"
    assert claims["azp"] == "cli"
    assert claims["exp"] - claims["iat"] == 120
    assert claims["nbf"] == claims["iat"]


def test_concurrent_first_start_agrees_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # never fork a process that holds gRPC state
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        kids = list(pool.map(_kid_of, [str(tmp_path)] * 8, timeout=60))
    assert len(set(kids)) == 1
    assert DevIssuer.load_or_create(tmp_path).kid == kids[0]
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["dev-issuer.jwks.json", "dev-issuer.key.pem"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_dev_tokens_cache_until_the_refresh_margin(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path)
    clock = _Clock()
    tokens = DevTokens(issuer, tenant="exthub", user="agent-1", roles=[AGENT, AGENT], clock=clock)
    first = tokens.token()
    claims = jwt.decode(
        first, issuer.private_key.public_key(), algorithms=["ES256"], audience=DEV_AUDIENCE, issuer=DEV_ISSUER
    )
    assert (claims["tid"], claims["oid"], claims["roles"]) == ("exthub", "agent-1", [AGENT])
    assert claims["exp"] - claims["iat"] == 3600
    clock.now += 3600 - 301  # more than the 300 s margin left
    assert tokens.token() == first
    clock.now += 2
    assert tokens.token() != first
    assert "agent-1" in repr(tokens) and first not in repr(tokens)
    with pytest.raises(ValueError, match="ttl_seconds"):
        DevTokens(issuer, tenant="t", user="u", roles=(), ttl_seconds=300)


def test_service_tokens_are_cached_agent_tokens_of_the_hub_tenant(tmp_path: Path) -> None:
    """The agents' and the execution service's own tokens (one helper for both)."""
    tokens = service_tokens(DevIssuer.load_or_create(tmp_path), user="agent-9")
    first = tokens.token()
    assert tokens.token() == first
    claims = jwt.decode(first, options={"verify_signature": False})
    assert (claims["roles"], claims["oid"], claims["tid"]) == ([AGENT], "agent-9", "exthub")
