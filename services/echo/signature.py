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
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import Algorithm
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


_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
SUPPORTED_CRIT = frozenset({"b64"})


def _b64url_decode(segment: str) -> bytes:
    """Strict unpadded base64url (RFC 7515): only the alphabet, and the canonical encoding of its bytes."""
    if len(segment) % 4 == 1 or not _B64URL_SEGMENT.fullmatch(segment):
        raise SignatureInvalid("malformed signature")
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("malformed signature") from exc
    if _b64url_encode(decoded) != segment:  # stray bits in the last character: not the canonical form
        raise SignatureInvalid("malformed signature")
    return decoded


def _check_crit(header: Mapping[str, Any]) -> None:
    """``crit`` (RFC 7515 4.1.11) lists only extensions understood here (``b64``), each present in the header;
    ``"b64": false`` must be listed in it (RFC 7797 3)."""
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or not crit:
            raise SignatureInvalid("malformed signature header")
        for extension in crit:
            if not isinstance(extension, str) or extension not in SUPPORTED_CRIT or extension not in header:
                raise SignatureInvalid("unsupported critical header parameter")
    if header.get("b64", True) is False and "b64" not in header.get("crit", ()):
        raise SignatureInvalid("the b64 header parameter must be listed in crit")


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
        jws = PyJWS(algorithms=list(ALLOWED_ALGORITHMS))
        self._algorithms: dict[str, Algorithm] = {alg: jws.get_algorithm_by_name(alg) for alg in ALLOWED_ALGORITHMS}
        #: (kid, alg) → the JWK it was parsed from, its algorithm and the key (parsed once per JWKS fetch)
        self._keys: dict[tuple[str, str], tuple[Mapping[str, Any], Algorithm, Any]] = {}
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
        header_segment, _, signature_segment = parts
        try:
            header = json.loads(_b64url_decode(header_segment))
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
        _check_crit(header)
        signature = _b64url_decode(signature_segment)
        algorithm, key = await self._public_key(kid, alg)
        if header.get("b64", True) is False:  # RFC 7797 unencoded detached payload
            signing_input = b"%s.%s" % (header_segment.encode("ascii"), body)
        else:  # RFC 7515 Appendix F: the payload is the base64url of the body
            signing_input = f"{header_segment}.{_b64url_encode(body)}".encode("ascii")
        # the library's own verification of the signature over the signing input (raw r||s → DER for ES256);
        # the token's segments were checked above, so decoding it again through ``PyJWS.decode`` (which also
        # re-encodes the whole body and checks it byte by byte) would only repeat work
        try:
            verified = algorithm.verify(signing_input, key, signature)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise SignatureInvalid("signature does not verify") from exc
        if not verified:
            raise SignatureInvalid("signature does not verify")
        return header

    async def _public_key(self, kid: str, alg: str) -> tuple[Algorithm, Any]:
        now = self._clock()
        if self._jwks is None or now - self._fetched_at >= self.max_age:
            await self._refresh()
        jwk = self._lookup(kid)
        if jwk is None and self._clock() - self._fetched_at >= self.min_refetch_interval:
            await self._refresh()  # once: the hub may have rotated its key
            jwk = self._lookup(kid)
        if jwk is None:
            raise SignatureInvalid("unknown signing key")
        cached = self._keys.get((kid, alg))
        if cached is None or cached[0] is not jwk:
            algorithm = self._algorithms[alg]
            cached = self._keys[(kid, alg)] = (jwk, algorithm, algorithm.prepare_key(_key_from_jwk(jwk, alg)))
        return cached[1], cached[2]

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
            self._keys.clear()
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
