"""The local development issuer (an ES256 key pair in the data directory and its JWKS) and cached tokens.

Tokens look like Azure AD v2.0 access tokens (``iss``, ``aud``, ``sub``, ``tid``, ``oid``, ``roles``,
``iat``, ``nbf``, ``exp``, ``ver``; header ``kid``), so the same verifier serves local and Azure runs. The
local hub trusts the issuer's JWKS (``keys/dev-issuer.jwks.json`` under the data directory); the gateway, the
services, the CLI and the client all use this one module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exthub.contract.jwk import ec_public_jwk, jwk_thumbprint
from exthub.contract.keyfiles import read_or_create_once, replace_atomically
from exthub.contract.roles import AGENT

__all__ = [
    "DEV_ALGORITHM",
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "JWKS_FILE",
    "KEY_FILE",
    "SERVICE_TENANT",
    "DevIssuer",
    "DevTokens",
    "TokenSource",
    "dev_jwks_path",
    "service_tokens",
]

DEV_ISSUER = "https://exthub.local/dev-issuer"
DEV_AUDIENCE = "api://exthub"
DEV_ALGORITHM = "ES256"
KEY_FILE = "keys/dev-issuer.key.pem"
JWKS_FILE = "keys/dev-issuer.jwks.json"
#: The tenant of the hub's own services (agents, the execution service) in development tokens.
SERVICE_TENANT = "exthub"


class TokenSource(Protocol):
    """Bearer tokens for a process's own calls: :class:`DevTokens` locally, a credential's tokens on Azure."""

    def token(self) -> str:
        """A token valid now (cheap: cached until shortly before it expires)."""
        ...


def dev_jwks_path(data_dir: Path) -> Path:
    """Where the development issuer's public JWKS lives inside ``data_dir``."""
    return data_dir / JWKS_FILE


class DevIssuer:
    """Signs development access tokens with a persistent ES256 key kept under ``data_dir/keys``."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, *, key_path: Path, jwks_path: Path) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise TypeError("the development issuer key must be an EC P-256 key")
        self._private_key = private_key
        self.key_path = key_path
        self.jwks_path = jwks_path
        public_jwk = ec_public_jwk(private_key.public_key())
        self.kid = jwk_thumbprint(public_jwk)
        self._public_jwk: dict[str, str] = {**public_jwk, "kid": self.kid, "use": "sig", "alg": DEV_ALGORITHM}

    @classmethod
    def load_or_create(cls, data_dir: Path) -> DevIssuer:
        """Load the key pair from ``data_dir`` or create it (race-free across processes); write the JWKS.

        Blocking file I/O: from async code call it through ``asyncio.to_thread``.
        """
        key_path = data_dir / KEY_FILE
        jwks_path = dev_jwks_path(data_dir)
        fresh = ec.generate_private_key(ec.SECP256R1())
        fresh_pem = fresh.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        pem = read_or_create_once(key_path, fresh_pem, mode=0o600)
        private_key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path} does not hold an EC private key")
        issuer = cls(private_key, key_path=key_path, jwks_path=jwks_path)
        content = (json.dumps(issuer.jwks, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            current = jwks_path.read_bytes()
        except FileNotFoundError:
            current = b""
        if current != content:
            replace_atomically(jwks_path, content, mode=0o644)
        return issuer

    @property
    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS (``{"keys": [...]}``) that verifiers load."""
        return {"keys": [dict(self._public_jwk)]}

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The signing key (for tests and the CLI; never logged or sent anywhere)."""
        return self._private_key

    def sign(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """Sign arbitrary claims with ES256 and this issuer's ``kid`` (no claim is added)."""
        return jwt.encode(
            dict(claims), self._private_key, algorithm=DEV_ALGORITHM, headers={"kid": self.kid, **(headers or {})}
        )

    def issue(
        self,
        *,
        tenant: str,
        user: str,
        roles: Iterable[str],
        ttl_seconds: int = 3600,
        audience: str | None = None,
        not_before: int | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An Azure-AD-v2-shaped access token for ``user`` in ``tenant`` with app ``roles``."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": DEV_ISSUER,
            "aud": audience or DEV_AUDIENCE,
            "sub": user,
            "tid": tenant,
            "oid": user,
            "roles": sorted(set(roles)),
            "iat": now,
            "nbf": now if not_before is None else not_before,
            "exp": now + ttl_seconds,
            "ver": "2.0",
        }
        claims.update(extra_claims or {})
        return self.sign(claims)


class DevTokens:
    """Development tokens for one identity, minted with ``issuer`` and cached until shortly before they expire.

    The one cache of development tokens: the client's ``DevTokenProvider``, the agent's and the execution
    service's own Agent-role tokens all use it. Build it with an issuer already loaded
    (``DevIssuer.load_or_create`` does file I/O: from async code call it through ``asyncio.to_thread``).
    """

    def __init__(
        self,
        issuer: DevIssuer,
        *,
        tenant: str,
        user: str,
        roles: Iterable[str],
        ttl_seconds: int = 3600,
        refresh_margin_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= refresh_margin_seconds:
            raise ValueError("ttl_seconds must be longer than refresh_margin_seconds")
        self.issuer = issuer
        self.tenant = tenant
        self.user = user
        self.roles = tuple(sorted(set(roles)))
        self._ttl = ttl_seconds
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0

    def token(self) -> str:
        """A token valid now: the cached one, or a fresh one when it is within the refresh margin of expiry."""
        now = self._clock()
        if not self._token or now >= self._expires_at - self._margin:
            self._token = self.issuer.issue(tenant=self.tenant, user=self.user, roles=self.roles, ttl_seconds=self._ttl)
            self._expires_at = now + self._ttl
        return self._token

    def __repr__(self) -> str:
        return f"DevTokens(tenant={self.tenant!r}, user={self.user!r}, roles={self.roles!r})"


def service_tokens(issuer: DevIssuer, *, user: str) -> DevTokens:
    """The development tokens of one of the hub's own services (an agent, the execution service): role Agent in
    tenant ``exthub``, as ``user``."""
    return DevTokens(issuer, tenant=SERVICE_TENANT, user=user, roles=[AGENT])
