"""JSON Web Key helpers shared by the development issuer, the hub's signing keys and the verifiers."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["P256_COORDINATE_BYTES", "b64url_encode", "ec_public_jwk", "jwk_thumbprint"]

P256_COORDINATE_BYTES = 32
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ec_public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7517 JWK members of a P-256 public key (``kty``, ``crv``, ``x``, ``y``)."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise TypeError("only P-256 keys are used by the hub")
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(P256_COORDINATE_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(P256_COORDINATE_BYTES, "big")),
    }


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members of an EC, RSA or OKP key."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
