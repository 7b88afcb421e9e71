"""Verification of the hub's ``Exthub-Signature`` header.

The header is a JWS compact serialisation with a detached payload (``<header>..<signature>``, RFC 7515
Appendix F) over the exact request body. The protected header names ``alg`` (ES256 or RS256 only; ``none``, HS*
and everything else are refused) and ``kid``; the public key comes from the hub's JWKS
(``GET <hub>/v1/signingKeys`` → ``{"keys": [JWK, ...]}``), cached and refetched once when a ``kid`` is unknown.

Both detached forms are accepted: the plain one (signing input ``<header>.<base64url(body)>``) and the RFC 7797
unencoded one (``"b64": false`` listed in ``crit``; signing input ``<header>.<body>``).

The protected header also binds the request to its audience and time (``docs/extension-contract.md``):
``aud`` (the extension, ``extensions/{id}``; it must be one this server serves), ``iat`` and ``exp`` (checked
with a small leeway for clock skew), ``jti`` (a signature is accepted once: a bounded cache remembers the ids
seen until they expire), ``execution`` and ``attempt`` (the app checks they match the body).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.api_jws import PyJWS

from exthub.contract.signatures import SIGNATURE_HEADER as SIGNATURE_HEADER

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS: Mapping[str, str] = {"ES256": "EC", "RS256": "RSA"}
MIN_RSA_BITS = 2048
MAX_HEADER_CHARS = 8192
DEFAULT_LEEWAY_SECONDS = 60.0
MAX_LIFETIME_SECONDS = 3600
DEFAULT_REPLAY_CACHE_SIZE = 100_000
MAX_JTI_CHARS = 128


class SignatureInvalid(Exception):
    """The signature is missing, malformed, uses a refused algorithm, names an unknown key or does not verify."""


class KeysUnavailable(Exception):
    """The hub's JWKS could not be fetched and no keys are cached."""


class JwksSource(Protocol):
    """Where the hub's public keys come from."""

    async def fetch(self) -> Mapping[str, Any]:
        """Return the JWKS document ``{"keys": [...]}``."""
        ...


class HttpJwksSource:
    """The hub's ``GET /v1/signingKeys`` (or any JWKS URL), fetched with a timeout."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    async def fetch(self) -> Mapping[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
            session.get(self.url, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            document = await response.json(content_type=None)
        if not isinstance(document, dict):
            raise TypeError("JWKS is not a JSON object")
        return document


class FileJwksSource:
    """A JWKS document in a file (read in a worker thread on every fetch)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def fetch(self) -> Mapping[str, Any]:
        text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        document = json.loads(text)
        if not isinstance(document, dict):
            raise TypeError("JWKS is not a JSON object")
        return document


class StaticJwksSource:
    """A fixed JWKS document (tests, embedding)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    async def fetch(self) -> Mapping[str, Any]:
        return self.document


def _b64url_decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("malformed signature") from exc


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SignatureVerifier:
    """Verifies ``Exthub-Signature`` headers against a cached JWKS, and their audience, lifetime and uniqueness.

    ``audiences``: the extensions this server serves (``extensions/{id}``); None accepts any audience (the app
    still checks that it names the extension of the body). ``replay_cache_size`` bounds the signature ids
    remembered; when it is full the oldest is forgotten before it expires.
    """

    def __init__(
        self,
        source: JwksSource,
        *,
        audiences: Iterable[str] | None = None,
        leeway: float = DEFAULT_LEEWAY_SECONDS,
        replay_cache_size: int = DEFAULT_REPLAY_CACHE_SIZE,
        max_age: float = 3600.0,
        min_refetch_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.audiences = frozenset(audiences) if audiences is not None else None
        self.leeway = leeway
        self.replay_cache_size = replay_cache_size
        self.max_age = max_age
        self.min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._jwks: dict[str, Mapping[str, Any]] | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._jws = PyJWS()
        self._seen: OrderedDict[str, float] = OrderedDict()  # jti → expiry, in arrival order

    async def verify(self, header_value: str | None, body: bytes) -> dict[str, Any]:
        """Check ``header_value`` against ``body`` and its claims; return the JWS protected header (with the
        claims), or raise SignatureInvalid. A signature that verifies is remembered: a second use is refused."""
        header = await self._verify_signature(header_value, body)
        self._check_claims(header)
        return header

    def _check_claims(self, header: Mapping[str, Any]) -> None:
        audience, issued, expires, jti = header.get("aud"), header.get("iat"), header.get("exp"), header.get("jti")
        if not isinstance(audience, str) or not audience:
            raise SignatureInvalid("the signature names no audience")
        if self.audiences is not None and audience not in self.audiences:
            raise SignatureInvalid("the signature is for another extension")
        if not _integer(issued) or not _integer(expires) or not 0 < expires - issued <= MAX_LIFETIME_SECONDS:
            raise SignatureInvalid("the signature has no valid lifetime (iat, exp)")
        now = self._wall_clock()
        if now > expires + self.leeway:
            raise SignatureInvalid("the signature has expired")
        if issued > now + self.leeway:
            raise SignatureInvalid("the signature is not valid yet")
        execution, attempt = header.get("execution"), header.get("attempt")
        if not isinstance(execution, str) or not execution or not _integer(attempt) or attempt < 1:
            raise SignatureInvalid("the signature names no execution and attempt")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise SignatureInvalid("the signature has no id (jti)")
        while self._seen and next(iter(self._seen.values())) + self.leeway < now:
            self._seen.popitem(last=False)
        if jti in self._seen:
            raise SignatureInvalid("the signature was used before")
        self._seen[jti] = float(expires)
        if len(self._seen) > self.replay_cache_size:
            self._seen.popitem(last=False)

    async def _verify_signature(self, header_value: str | None, body: bytes) -> dict[str, Any]:
        if not header_value:
            raise SignatureInvalid("missing Exthub-Signature header")
        token = header_value.strip()
        if len(token) > MAX_HEADER_CHARS:
            raise SignatureInvalid("malformed signature")
        parts = token.split(".")
        if len(parts) != 3 or parts[1] != "" or not parts[0] or not parts[2]:
            raise SignatureInvalid("the signature must be a detached JWS (header..signature)")
        try:
            header = json.loads(_b64url_decode(parts[0]))
        except ValueError as exc:
            raise SignatureInvalid("malformed signature header") from exc
        if not isinstance(header, dict):
            raise SignatureInvalid("malformed signature header")
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise SignatureInvalid("signature algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise SignatureInvalid("signature has no kid")
        key = await self._public_key(kid, alg)
        try:
            if header.get("b64", True) is False:  # RFC 7797 unencoded detached payload
                self._jws.decode_complete(token, key, algorithms=[alg], detached_payload=body)
            else:  # RFC 7515 Appendix F: reattach the base64url payload and verify normally
                attached = f"{parts[0]}.{_b64url_encode(body)}.{parts[2]}"
                self._jws.decode_complete(attached, key, algorithms=[alg])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise SignatureInvalid("signature does not verify") from exc
        return header

    async def _public_key(self, kid: str, alg: str) -> Any:
        now = self._clock()
        if self._jwks is None or now - self._fetched_at >= self.max_age:
            await self._refresh()
        jwk = self._lookup(kid)
        if jwk is None and self._clock() - self._fetched_at >= self.min_refetch_interval:
            await self._refresh()  # once: the hub may have rotated its key
            jwk = self._lookup(kid)
        if jwk is None:
            raise SignatureInvalid("unknown signing key")
        return _key_from_jwk(jwk, alg)

    def _lookup(self, kid: str) -> Mapping[str, Any] | None:
        return None if self._jwks is None else self._jwks.get(kid)

    async def _refresh(self) -> None:
        started = self._fetched_at
        async with self._lock:
            if self._fetched_at != started:
                return  # someone else refreshed while we waited
            try:
                document = await self.source.fetch()
            except Exception as exc:
                if self._jwks is None:
                    raise KeysUnavailable("the hub's signing keys are unavailable") from exc
                logger.warning("JWKS refresh failed; keeping cached keys: %s", type(exc).__name__)
                # retry no sooner than min_refetch_interval from now
                self._fetched_at = self._clock() - self.max_age + self.min_refetch_interval
                return
            self._jwks = _index_jwks(document)
            self._fetched_at = self._clock()


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _index_jwks(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    keys = document.get("keys")
    indexed: dict[str, Mapping[str, Any]] = {}
    if not isinstance(keys, list):
        return indexed
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str) and kid and jwk.get("use", "sig") == "sig":
            indexed[kid] = jwk
    return indexed


def _key_from_jwk(jwk: Mapping[str, Any], alg: str) -> Any:
    """The public key of ``jwk`` if it fits ``alg`` (kty, curve, size, declared alg), else SignatureInvalid."""
    if jwk.get("kty") != ALLOWED_ALGORITHMS[alg] or jwk.get("alg", alg) != alg or "d" in jwk:
        raise SignatureInvalid("signing key does not match the algorithm")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise SignatureInvalid("unusable signing key") from exc
    if alg == "ES256" and isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1):
        return key
    if alg == "RS256" and isinstance(key, RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    raise SignatureInvalid("signing key does not match the algorithm")
