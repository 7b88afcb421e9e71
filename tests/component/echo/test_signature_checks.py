"""SignatureVerifier on its own: every check of the JWS it does itself (segments, ``crit``, ``b64``), and the
public key parsed once per key and JWKS fetch."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.echo import SignatureVerifier, StaticJwksSource
from services.echo import signature as signature_module
from services.echo.signature import SignatureInvalid
from tests.component.echo.conftest import SigningKey, new_key, request_claims

BODY = json.dumps({"executionId": "e1", "extensionId": "echo", "attempt": 1, "requestParameters": {}}).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key: SigningKey, header: dict[str, Any], body: bytes = BODY, *, encoded: bool = True) -> str:
    """A detached ES256 JWS with exactly ``header`` as its protected header (nothing added or checked)."""
    protected = b64url(json.dumps(header).encode())
    payload = b64url(body).encode() if encoded else body
    der = key.private.sign(protected.encode() + b"." + payload, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{protected}..{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def header_for(key: SigningKey, **extra: Any) -> dict[str, Any]:
    return {"alg": "ES256", "kid": key.kid, **request_claims(BODY), **extra}


def verifier_for(*keys: SigningKey) -> SignatureVerifier:
    return SignatureVerifier(StaticJwksSource({"keys": [key.jwk() for key in keys]}))


async def test_a_plain_detached_signature_verifies_and_a_changed_body_does_not() -> None:
    key = new_key("k1")
    verifier = verifier_for(key)
    header = await verifier.verify(sign(key, header_for(key)), BODY)
    assert header["kid"] == "k1"
    with pytest.raises(SignatureInvalid):
        await verifier.verify(sign(key, header_for(key)), BODY + b" ")


async def test_unencoded_payload_needs_b64_listed_in_crit() -> None:
    key = new_key("k1")
    verifier = verifier_for(key)
    good = sign(key, header_for(key, b64=False, crit=["b64"]), encoded=False)
    assert (await verifier.verify(good, BODY))["b64"] is False
    with pytest.raises(SignatureInvalid, match="crit"):
        await verifier.verify(sign(key, header_for(key, b64=False), encoded=False), BODY)


@pytest.mark.parametrize(
    "crit",
    [
        ["exp"],  # a registered name, but not an extension this verifier understands
        ["b64"],  # listed but absent from the header
        [],
        "b64",
        [1],
    ],
)
async def test_crit_lists_only_understood_extensions_present_in_the_header(crit: object) -> None:
    key = new_key("k1")
    with pytest.raises(SignatureInvalid):
        await verifier_for(key).verify(sign(key, header_for(key, crit=crit)), BODY)


@pytest.mark.parametrize("mangle", ["padded", "junk", "length", "stray bits"])
async def test_a_signature_segment_must_be_strict_base64url(mangle: str) -> None:
    key = new_key("k1")
    token = sign(key, header_for(key))
    head, _, signature = token.split(".")
    # the 64-byte signature encodes to 86 characters: the last one carries 4 bits that must be zero
    last = signature[-1]
    mangled = {
        "padded": signature + "==",
        "junk": signature[:10] + "!" + signature[11:],
        "length": signature + "A",
        "stray bits": signature[:-1]
        + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(last) | 1
        ],
    }[mangle]
    assert mangled != signature
    with pytest.raises(SignatureInvalid):
        await verifier_for(key).verify(f"{head}..{mangled}", BODY)


async def test_the_key_is_parsed_once_per_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    original = signature_module._key_from_jwk

    def counting(jwk: Any, alg: str) -> Any:
        parsed.append(jwk["kid"])
        return original(jwk, alg)

    monkeypatch.setattr(signature_module, "_key_from_jwk", counting)
    key = new_key("k1")
    source = StaticJwksSource({"keys": [key.jwk()]})
    verifier = SignatureVerifier(source, min_refetch_interval=0)
    for _ in range(3):
        await verifier.verify(sign(key, header_for(key)), BODY)
    assert parsed == ["k1"]
    # a rotation: the same kid now names another key; an unknown kid refetches, and the new JWKS is parsed anew
    rotated, other = new_key("k1"), new_key("k2")
    source.document = {"keys": [rotated.jwk(), other.jwk()]}
    await verifier.verify(sign(other, header_for(other)), BODY)
    await verifier.verify(sign(rotated, header_for(rotated)), BODY)
    assert parsed == ["k1", "k2", "k1"]
    with pytest.raises(SignatureInvalid):
        await verifier.verify(sign(key, header_for(key)), BODY)  # the old key is gone with the old JWKS
