"""Status-update keys: 256-bit random, stored only as a SHA-256 hash, compared in constant time.

The plain key goes once to whoever may report status (the extension, in the request body); the execution
document keeps only :func:`hash_status_key` of it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from services.platform.errors import PermissionDenied

STATUS_KEY_INVALID = "STATUS_KEY_INVALID"
_KEY_BYTES = 32  # 256 bits


def new_status_key() -> tuple[str, str]:
    """A fresh key: ``(plain, hashed)``; hand out ``plain``, store ``hashed`` (lowercase hex SHA-256)."""
    plain = secrets.token_urlsafe(_KEY_BYTES)
    return plain, hash_status_key(plain)


def hash_status_key(plain: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def verify_status_key(plain: str, hashed: str) -> bool:
    """Whether ``plain`` is the key whose hash is ``hashed`` (constant-time comparison of the hashes)."""
    if not plain or not hashed:
        return False
    return hmac.compare_digest(hash_status_key(plain).encode("ascii"), hashed.encode("utf-8"))


def require_status_key(plain: str, hashed: str) -> None:
    """Raise ``PermissionDenied`` ``STATUS_KEY_INVALID`` unless ``plain`` matches ``hashed``."""
    if not verify_status_key(plain, hashed):
        raise PermissionDenied("the status-update key is not valid for this execution", reason=STATUS_KEY_INVALID)
