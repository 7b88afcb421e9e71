"""Verifying the hub's signatures with its public keys (``GET /v1/signingKeys``): what extensions, the demo and
the tests use; the signing half lives with the private keys in the execution service.

* The ``Exthub-Signature`` header of an extension request: a JWS with detached payload (RFC 7515 Appendix F,
  ``header..signature``), ES256, ``kid`` naming a key of the hub's JWKS, over exactly the body bytes.
* A direct token (mode DIRECT): an ES256 JWT with ``iss`` = the hub's id, ``sub`` = ``execution``, ``aud``,
  ``iat``/``nbf``/``exp``, ``jti`` and the claims ``execution``, ``extension``, ``version``, ``profile``,
  ``tid``, ``oid``.

Only ES256 is accepted: ``none``, HS* and every other algorithm are refused before any key is looked at.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exthub.contract.jwk import P256_COORDINATE_BYTES, b64url_encode

__all__ = [
    "ALGORITHM",
    "DIRECT_TOKEN_CLAIMS",
    "SIGNATURE_HEADER",
    "SignatureInvalid",
    "verify_body_signature",
    "verify_direct_token",
]

#: The HTTP header that carries the body signature of an extension request.
SIGNATURE_HEADER = "Exthub-Signature"
#: The one signature algorithm of the hub.
ALGORITHM = "ES256"
#: The claims every direct token carries besides the registered ones.
DIRECT_TOKEN_CLAIMS = ("execution", "extension", "version", "profile", "tid", "oid")

_COORDINATE_BYTES = P256_COORDINATE_BYTES
_MAX_SIGNATURE_CHARS = 4096


class SignatureInvalid(Exception):
    """A body signature or direct token that does not verify (any reason: format, algorithm, key, expiry)."""


def verify_body_signature(signature: str, body: bytes, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Check an ``Exthub-Signature`` value against ``body`` with the public ``jwks``; return its header.

    Raises :class:`SignatureInvalid` unless it is a detached ES256 JWS by a key of ``jwks`` over exactly
    ``body``.
    """
    if not isinstance(signature, str) or len(signature) > _MAX_SIGNATURE_CHARS:
        raise SignatureInvalid("malformed signature")
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise SignatureInvalid("the signature must be a JWS with detached payload (header..signature)")
    encoded_header, _, encoded_signature = parts
    header = _decode_header(encoded_header)
    if header.get("alg") != ALGORITHM:
        raise SignatureInvalid("unsupported signature algorithm")
    if "crit" in header or "b64" in header:
        raise SignatureInvalid("unsupported JWS header parameters")
    public_key = _public_key_for(jwks, header.get("kid"))
    raw = _b64decode(encoded_signature)
    if len(raw) != 2 * _COORDINATE_BYTES:
        raise SignatureInvalid("malformed signature")
    der = encode_dss_signature(
        int.from_bytes(raw[:_COORDINATE_BYTES], "big"), int.from_bytes(raw[_COORDINATE_BYTES:], "big")
    )
    signing_input = f"{encoded_header}.{b64url_encode(body)}".encode("ascii")
    try:
        public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid("the signature does not match the body") from None
    return header


def verify_direct_token(
    token: str, jwks: Mapping[str, Any], *, issuer: str, audience: str, leeway_seconds: float = 0
) -> dict[str, Any]:
    """The claims of a direct token issued by the hub (mode DIRECT).

    Checks the ES256 signature with ``jwks``, ``iss``, ``aud``, ``exp``/``nbf`` (with ``leeway_seconds``)
    and that every direct-token claim is present; raises :class:`SignatureInvalid` otherwise.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise SignatureInvalid("malformed token") from None
    if header.get("alg") != ALGORITHM:
        raise SignatureInvalid("unsupported token algorithm")
    public_key = _public_key_for(jwks, header.get("kid"))
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=leeway_seconds,
            options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise SignatureInvalid(f"invalid token: {type(exc).__name__}") from None
    for name in DIRECT_TOKEN_CLAIMS:
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise SignatureInvalid(f"the token lacks the claim {name}")
    if claims["sub"] != claims["execution"]:
        raise SignatureInvalid("the token's subject is not its execution")
    return claims


# -- JWK / JWS helpers ---------------------------------------------------------------------------------------


def _public_key_for(jwks: Mapping[str, Any], kid: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(kid, str) or not kid:
        raise SignatureInvalid("the signature names no key")
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise SignatureInvalid("no usable key set")
    matches = [k for k in keys if isinstance(k, Mapping) and k.get("kid") == kid]
    if len(matches) != 1:
        raise SignatureInvalid("unknown signing key")
    jwk = matches[0]
    if (
        jwk.get("kty") != "EC"
        or jwk.get("crv") != "P-256"
        or jwk.get("use", "sig") != "sig"
        or jwk.get("alg", ALGORITHM) != ALGORITHM
    ):
        raise SignatureInvalid("the signing key is not an ES256 signature key")
    x = _b64decode(jwk.get("x"))
    y = _b64decode(jwk.get("y"))
    if len(x) != _COORDINATE_BYTES or len(y) != _COORDINATE_BYTES:
        raise SignatureInvalid("the signing key is malformed")
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1())
    try:
        return numbers.public_key()
    except ValueError:  # not a point on the curve
        raise SignatureInvalid("the signing key is malformed") from None


def _decode_header(encoded: str) -> dict[str, Any]:
    try:
        header = json.loads(_b64decode(encoded))
    except ValueError:
        raise SignatureInvalid("malformed signature header") from None
    if not isinstance(header, dict):
        raise SignatureInvalid("malformed signature header")
    return header


def _b64decode(text: object) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise SignatureInvalid("malformed base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SignatureInvalid("malformed base64url") from None
