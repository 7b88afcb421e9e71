"""Bearer-token verification with a cached JWKS: the service-side half of "checked twice"."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from services.platform.auth.principal import Principal
from services.platform.errors import Unauthenticated, Unavailable
from services.platform.limits import MAX_TOKEN_BYTES

if TYPE_CHECKING:
    from services.platform.settings import AuthSettings

__all__ = ["KEY_REFETCH_INTERVAL_SECONDS", "MAX_TOKEN_BYTES", "TokenVerifier"]

_log = logging.getLogger(__name__)

KEY_REFETCH_INTERVAL_SECONDS = 30.0
"""An unknown ``kid`` makes the verifier refetch the JWKS at most this often."""
VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_SIZE = 10_000
_FILE_CHECK_INTERVAL_SECONDS = 1.0
_HTTP_TIMEOUT_SECONDS = 5.0
_MAX_JWKS_BYTES = 1024 * 1024

# Algorithm family → the JWK ``kty`` (and for EC the ``crv``) it must be used with.
_KTY_BY_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason="TOKEN_INVALID")


def is_asymmetric_algorithm(alg: str) -> bool:
    """True for the JWS algorithms the hub may ever accept (RSA, RSA-PSS, ECDSA, EdDSA)."""
    return alg[:2] in _KTY_BY_PREFIX and alg.lower() != "none" and not alg.upper().startswith("HS")


@dataclass
class _KeySet:
    keys: dict[str, dict[str, Any]]
    loaded_at: float
    version: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) for a file source


def _parse_jwks(raw: bytes | str) -> dict[str, dict[str, Any]]:
    document = json.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS must be an object with a 'keys' array")  # noqa: TRY004
    keys: dict[str, dict[str, Any]] = {}
    for key in document["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            continue
        if key.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric ("oct") keys are never used
        if key.get("use", "sig") != "sig":
            continue
        keys[key["kid"]] = key
    return keys


class TokenVerifier:
    """Verifies Azure-AD-style access tokens against the configured issuers, audiences and JWKS."""

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        if settings.jwks_file is None and settings.jwks_uri is None:
            raise ValueError("auth settings need jwks_file or jwks_uri")
        self._settings = settings
        self._clock = clock
        self._allowed = frozenset(settings.allowed_algorithms)
        self._issuers = frozenset(settings.issuers)
        self._audiences = list(settings.audiences)
        self._keys: _KeySet | None = None
        self._jwk_cache: dict[tuple[str, str], jwt.PyJWK] = {}
        self._lock = asyncio.Lock()
        self._last_forced_refresh: float | None = None
        self._last_file_check = float("-inf")
        self._verified: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` and return its principal; ``Unauthenticated`` (TOKEN_INVALID) otherwise.

        A token that verified is remembered (by its SHA-256) until it expires, for at most
        ``VERIFIED_CACHE_SECONDS``, so a key removed from the JWKS stops being honoured within that time.
        """
        if not token:
            raise _invalid("missing bearer token")
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid("bearer token too large")
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            principal, valid_until = cached
            if self._clock() < valid_until:
                self._verified.move_to_end(digest)
                return principal
            del self._verified[digest]
        principal, expires = await self._verify_uncached(token)
        lifetime = min(expires - time.time(), VERIFIED_CACHE_SECONDS)
        self._verified[digest] = (principal, self._clock() + lifetime)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify_uncached(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed bearer token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or not is_asymmetric_algorithm(alg) or alg not in self._allowed:
            raise _invalid("token algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("token has no key id")
        jwk = await self._key(kid)
        if jwk is None:
            raise _invalid("token signed with an unknown key")
        key = self._usable_key(kid, alg, jwk)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audiences,
                issuer=self._issuers,
                leeway=self._settings.clock_skew_seconds,
                options={"require": ["exp", "iss", "aud", "sub", "tid"], "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise _invalid(f"token rejected: {type(exc).__name__}") from None
        return self._principal(claims), float(claims["exp"])

    # -- keys --------------------------------------------------------------------------------------

    def _usable_key(self, kid: str, alg: str, jwk: Mapping[str, Any]) -> jwt.PyJWK:
        """Check that ``alg`` fits the JWK (family, curve, declared alg) and build the verifying key."""
        kty = _KTY_BY_PREFIX.get(alg[:2])
        if kty is None or jwk.get("kty") != kty:
            raise _invalid("token algorithm does not match its key")
        if kty == "EC" and jwk.get("crv") != _EC_CURVES.get(alg):
            raise _invalid("token algorithm does not match its key curve")
        declared = jwk.get("alg")
        if declared is not None and declared != alg:
            raise _invalid("token algorithm does not match its key")
        cached = self._jwk_cache.get((kid, alg))
        if cached is not None:
            return cached
        try:
            key = jwt.PyJWK(dict(jwk), algorithm=alg)
        except jwt.PyJWTError:
            raise _invalid("token signed with an unusable key") from None
        self._jwk_cache[(kid, alg)] = key
        return key

    async def _key(self, kid: str) -> dict[str, Any] | None:
        keys = await self._current_keys()
        jwk = keys.keys.get(kid)
        if jwk is not None:
            return jwk
        now = self._clock()
        if self._last_forced_refresh is not None and now - self._last_forced_refresh < KEY_REFETCH_INTERVAL_SECONDS:
            return None
        async with self._lock:
            if self._keys is not None and kid in self._keys.keys:
                return self._keys.keys[kid]
            if self._last_forced_refresh is not None and (
                self._clock() - self._last_forced_refresh < KEY_REFETCH_INTERVAL_SECONDS
            ):
                return None
            self._last_forced_refresh = self._clock()
            _log.info("unknown token key id, refreshing the JWKS")
            await self._reload(force=True)
        return self._keys.keys.get(kid) if self._keys is not None else None

    async def _current_keys(self) -> _KeySet:
        keys = self._keys
        if keys is not None and not self._stale(keys):
            return keys
        async with self._lock:
            if self._keys is None or self._stale(self._keys):
                await self._reload(force=False)
            assert self._keys is not None
            return self._keys

    def _stale(self, keys: _KeySet) -> bool:
        now = self._clock()
        if self._settings.jwks_file is not None:
            return now - self._last_file_check >= _FILE_CHECK_INTERVAL_SECONDS
        return now - keys.loaded_at >= self._settings.jwks_cache_seconds

    async def _reload(self, *, force: bool) -> None:
        """Reload the key set (the caller holds the lock). Keeps a stale set if the source fails."""
        try:
            if self._settings.jwks_file is not None:
                self._last_file_check = self._clock()
                current = self._keys.version if self._keys is not None else None
                loaded = await asyncio.to_thread(_read_jwks_file, self._settings.jwks_file, current, force)
                if loaded is None:
                    return
                keys, version = loaded
                self._install(_KeySet(keys, self._clock(), version))
            else:
                assert self._settings.jwks_uri is not None
                keys = await _fetch_jwks(self._settings.jwks_uri)
                self._install(_KeySet(keys, self._clock()))
        except (OSError, ValueError, TimeoutError) as exc:
            _log.warning("cannot load the JWKS: %s", type(exc.__cause__ or exc).__name__)
            if self._keys is None:
                raise Unavailable("signing keys are unavailable") from None
            # keep serving from the previous key set; retry after another cache period
            self._keys.loaded_at = self._clock()

    def _install(self, keys: _KeySet) -> None:
        self._keys = keys
        self._jwk_cache = {k: v for k, v in self._jwk_cache.items() if k[0] in keys.keys}

    # -- claims ------------------------------------------------------------------------------------

    @staticmethod
    def _principal(claims: Mapping[str, Any]) -> Principal:
        subject, tenant, issuer = claims.get("sub"), claims.get("tid"), claims.get("iss")
        user = claims.get("oid", subject)
        roles = claims.get("roles", [])
        if not all(isinstance(v, str) and v for v in (subject, tenant, user, issuer)):
            raise _invalid("token claims sub, tid, oid and iss must be strings")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _invalid("token claim roles must be an array of strings")
        return Principal(
            subject=str(subject), tenant=str(tenant), user=str(user), roles=frozenset(roles), issuer=str(issuer)
        )


def _read_jwks_file(
    path: Path, current: tuple[int, int, int] | None, force: bool
) -> tuple[dict[str, dict[str, Any]], tuple[int, int, int]] | None:
    """Read the JWKS file when it changed (or when forced); None when it is unchanged."""
    stat = os.stat(path)
    version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if version == current and not force:
        return None
    return _parse_jwks(path.read_bytes()), version


async def _fetch_jwks(uri: str) -> dict[str, dict[str, Any]]:
    # imported here: a service that reads its keys from a file never loads an HTTP client (~7 MiB)
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(uri, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            body = await response.content.read(_MAX_JWKS_BYTES + 1)
    except aiohttp.ClientError as exc:
        raise OSError("the JWKS request failed") from exc
    if len(body) > _MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return _parse_jwks(body)
