"""The hub's signing keys: ES256 keys with RFC 7638 ids, rotation, JWKS, body signatures
and direct tokens.

On disk (``directory``, mode 0700): one ``<kid>.pem`` per private key (PKCS#8, mode 0600) and
``keyring.json`` listing the kids, current first. The first start publishes ``keyring.json`` with
``link()``, which fails if the file exists, so two processes starting together end with one key; rotation
replaces it atomically (``rename``) under an advisory lock. The private keys never leave
:class:`SigningKeyRing`: no method returns them, ``repr`` shows only kids and the ring cannot be pickled.

Verification needs only the public JWKS (``GET /v1/signingKeys``) and is what extensions use: it lives in
:mod:`exthub.contract.signatures`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from exthub.contract.jwk import P256_COORDINATE_BYTES, b64url_encode, ec_public_jwk, jwk_thumbprint
from exthub.contract.signatures import ALGORITHM

MAX_KEYS = 3
#: How long an extension request's signature is valid (the extension verifies it on receipt).
REQUEST_SIGNATURE_TTL_SECONDS = 300

_MANIFEST = "keyring.json"
_LOCK = ".keyring.lock"
_KID_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest
_COORDINATE_BYTES = P256_COORDINATE_BYTES


class KeyRingError(RuntimeError):
    """The key directory is unusable (corrupt manifest, missing or foreign key file)."""


class _MissingKeyFile(KeyRingError):
    pass


class SigningKeyRing:
    """The hub's ES256 signing keys: the current one signs, the previous ones (at most ``max_keys`` in all)
    still verify. Build with :meth:`load_or_create`."""

    __slots__ = ("_directory", "_hub_id", "_keys", "_max_keys")

    def __init__(self, *, hub_id: str, directory: Path, max_keys: int = MAX_KEYS) -> None:
        """Use :meth:`load_or_create`; this constructor only prepares an empty ring."""
        if not hub_id:
            raise ValueError("hub_id is required")
        if max_keys < 1:
            raise ValueError("max_keys must be 1 or more")
        self._hub_id = hub_id
        self._directory = directory
        self._max_keys = max_keys
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}  # kid → key, current first

    @classmethod
    def load_or_create(cls, directory: Path, *, hub_id: str, max_keys: int = MAX_KEYS) -> SigningKeyRing:
        """The ring stored in ``directory``; on the very first start, a new key (safe against a racing
        process: exactly one key wins and both processes use it)."""
        ring = cls(hub_id=hub_id, directory=directory, max_keys=max_keys)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        kids = _read_manifest(directory)
        if kids is None:
            kids = _create_first_key(directory)
        ring._load(kids)
        return ring

    @property
    def hub_id(self) -> str:
        """The issuer of direct tokens."""
        return self._hub_id

    @property
    def current_kid(self) -> str:
        """The id of the key that signs."""
        return self._current()[0]

    @property
    def kids(self) -> tuple[str, ...]:
        """All key ids, current first."""
        return tuple(self._keys)

    def reload(self) -> None:
        """Pick up a rotation done by another process."""
        kids = _read_manifest(self._directory)
        if kids is None:
            raise KeyRingError(f"{self._directory / _MANIFEST} has disappeared")
        self._load(kids)

    def rotate(self) -> str:
        """Make a new key current and return its kid; keep the newest previous keys for verification
        (``max_keys`` in all) and delete the files of older ones."""
        with _locked(self._directory):
            kids = _read_manifest(self._directory) or []
            key = ec.generate_private_key(ec.SECP256R1())
            kid = _thumbprint(key.public_key())
            _write_private_key(self._directory, kid, key)
            kept = [kid, *[k for k in kids if k != kid]][: self._max_keys]
            _replace_manifest(self._directory, kept)
            for dropped in kids:
                if dropped not in kept:
                    with contextlib.suppress(FileNotFoundError):
                        (self._directory / f"{dropped}.pem").unlink()
        self._load(kept)
        return kid

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set (``{"keys": [...]}``, current first): never a private member."""
        return {"keys": [_public_jwk(kid, key.public_key()) for kid, key in self._keys.items()]}

    def sign_body(self, body: bytes) -> str:
        """A JWS with detached payload (RFC 7515 Appendix F, ``header..signature``) over exactly ``body``,
        for the ``Exthub-Signature`` header. Header: ``{"alg": "ES256", "kid": …, "typ": "JOSE"}``.

        It binds the body only: use :meth:`sign_extension_request`, which also binds audience and time."""
        return self._sign_detached(body, {})

    def _sign_detached(self, body: bytes, claims: Mapping[str, Any]) -> str:
        kid, key = self._current()
        protected = {**claims, "alg": ALGORITHM, "kid": kid, "typ": "JOSE"}
        header = b64url_encode(json.dumps(protected, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{header}.{b64url_encode(body)}".encode("ascii")
        der = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
        return f"{header}..{b64url_encode(raw)}"

    def sign_extension_request(
        self,
        body: bytes,
        *,
        audience: str,
        execution: str,
        attempt: int,
        now: datetime,
        ttl_seconds: int = REQUEST_SIGNATURE_TTL_SECONDS,
    ) -> str:
        """The ``Exthub-Signature`` of one extension request: a JWS with detached payload over exactly
        ``body`` (as :meth:`sign_body`) whose protected header also binds who may accept it and when (JWT claims
        carried as header parameters): ``aud`` (the extension, ``extensions/{id}``), ``iss`` (the hub id),
        ``iat`` = ``now``, ``exp`` = ``now + ttl_seconds``, a random ``jti`` (for replay detection), and
        ``execution`` (``executions/{id}``) and ``attempt``. An extension refuses a signature for another
        audience, after its expiry, or seen before."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not audience or not execution or attempt < 1:
            raise ValueError("audience, execution and a positive attempt are required")
        issued = int(now.timestamp())
        return self._sign_detached(
            body,
            {
                "aud": audience,
                "iss": self._hub_id,
                "iat": issued,
                "exp": issued + ttl_seconds,
                "jti": uuid.uuid4().hex,
                "execution": execution,
                "attempt": attempt,
            },
        )

    def issue_direct_token(
        self,
        *,
        execution: str,
        extension: str,
        version: str,
        profile: str,
        tenant: str,
        user: str,
        audience: str,
        ttl_seconds: int,
        now: datetime,
    ) -> str:
        """A signed JWT for a DIRECT execution: ``iss`` = hub id, ``sub`` = execution
        name, ``aud``, ``iat``/``nbf`` = ``now``, ``exp`` = ``now + ttl_seconds``, a random ``jti``, and the
        claims ``execution``, ``extension``, ``version``, ``profile``, ``tid``, ``oid``."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self._hub_id,
            "sub": execution,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
            "jti": uuid.uuid4().hex,
            "execution": execution,
            "extension": extension,
            "version": version,
            "profile": profile,
            "tid": tenant,
            "oid": user,
        }
        kid, key = self._current()
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})

    def __repr__(self) -> str:
        return f"SigningKeyRing(hub_id={self._hub_id!r}, kids={list(self._keys)!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SigningKeyRing holds private keys and cannot be pickled or copied")

    def _current(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        # One read of the dict reference, so a concurrent rotate() cannot split kid from key.
        keys = self._keys
        if not keys:
            raise KeyRingError("no key loaded: build the ring with SigningKeyRing.load_or_create")
        return next(iter(keys.items()))

    def _load(self, kids: Sequence[str]) -> None:
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for index, kid in enumerate(kids[: self._max_keys]):
            try:
                keys[kid] = _read_private_key(self._directory, kid)
            except _MissingKeyFile:
                if index == 0:
                    raise
                # A previous key pruned by a concurrent rotation after we read the manifest.
        self._keys = keys


# -- key files ---------------------------------------------------------------------------------------


def _create_first_key(directory: Path) -> list[str]:
    """Create a key and publish a manifest naming it, unless another process published one first."""
    key = ec.generate_private_key(ec.SECP256R1())
    kid = _thumbprint(key.public_key())
    _write_private_key(directory, kid, key)
    if _publish_manifest(directory, [kid]):
        return [kid]
    (directory / f"{kid}.pem").unlink(missing_ok=True)  # lost the race: use the winner's key
    kids = _read_manifest(directory)
    if kids is None:
        raise KeyRingError(f"{directory / _MANIFEST} vanished while starting")
    return kids


def _read_manifest(directory: Path) -> list[str] | None:
    try:
        text = (directory / _MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        kids = data["kids"]
    except (ValueError, KeyError, TypeError):
        raise KeyRingError(f"{directory / _MANIFEST} is corrupt") from None
    if (
        not isinstance(kids, list)
        or not kids
        or not all(isinstance(kid, str) and _KID_RE.fullmatch(kid) for kid in kids)
    ):
        raise KeyRingError(f"{directory / _MANIFEST} is corrupt")
    return list(kids)


def _manifest_bytes(kids: Sequence[str]) -> bytes:
    return json.dumps({"version": 1, "kids": list(kids)}, indent=2).encode("utf-8") + b"\n"


def _publish_manifest(directory: Path, kids: Sequence[str]) -> bool:
    """Create the manifest only if absent (``link`` is atomic and refuses an existing target)."""
    temp = _write_temp(directory, _manifest_bytes(kids))
    try:
        os.link(temp, directory / _MANIFEST)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    _fsync_directory(directory)
    return True


def _replace_manifest(directory: Path, kids: Sequence[str]) -> None:
    temp = _write_temp(directory, _manifest_bytes(kids))
    os.replace(temp, directory / _MANIFEST)
    _fsync_directory(directory)


def _write_private_key(directory: Path, kid: str, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    temp = _write_temp(directory, pem)
    os.replace(temp, directory / f"{kid}.pem")
    _fsync_directory(directory)


def _write_temp(directory: Path, content: bytes) -> Path:
    """A fully written, fsynced, mode-0600 file with a unique name in ``directory``."""
    temp = directory / f".tmp-{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def _read_private_key(directory: Path, kid: str) -> ec.EllipticCurvePrivateKey:
    path = directory / f"{kid}.pem"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise _MissingKeyFile(f"missing key file {path}") from None
    except ValueError:
        raise KeyRingError(f"unreadable key file {path}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyRingError(f"{path} is not a P-256 key")
    if _thumbprint(key.public_key()) != kid:
        raise KeyRingError(f"{path} does not hold the key {kid}")
    return key


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- JWK / JWS helpers -------------------------------------------------------------------------------


def _public_jwk(kid: str, public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    jwk = ec_public_jwk(public_key)
    return {
        "kty": jwk["kty"],
        "kid": kid,
        "use": "sig",
        "alg": ALGORITHM,
        "crv": jwk["crv"],
        "x": jwk["x"],
        "y": jwk["y"],
    }


def _thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    return jwk_thumbprint(ec_public_jwk(public_key))
