"""Status-update keys: 256-bit, stored hashed, compared in constant time."""

from __future__ import annotations

import base64
import hashlib

import pytest

from services.execution.domain.status_key import (
    STATUS_KEY_INVALID,
    hash_status_key,
    new_status_key,
    require_status_key,
    verify_status_key,
)
from services.platform.errors import PermissionDenied


def test_new_key_is_256_bit_and_stored_as_sha256_hex() -> None:
    plain, hashed = new_status_key()
    assert len(base64.urlsafe_b64decode(plain + "=" * (-len(plain) % 4))) == 32
    assert hashed == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in hashed
    assert hash_status_key(plain) == hashed


def test_keys_are_unique() -> None:
    assert len({new_status_key()[0] for _ in range(200)}) == 200


def test_verify() -> None:
    plain, hashed = new_status_key()
    assert verify_status_key(plain, hashed)
    other, _ = new_status_key()
    assert not verify_status_key(other, hashed)
    assert not verify_status_key(hashed, hashed)  # the hash itself is not the key
    assert not verify_status_key("", hashed)
    assert not verify_status_key(plain, "")
    assert not verify_status_key("clé-ünïcode", hashed)
    assert not verify_status_key(plain, "ünïcode")


def test_require_raises_permission_denied() -> None:
    plain, hashed = new_status_key()
    require_status_key(plain, hashed)
    with pytest.raises(PermissionDenied) as info:
        require_status_key("wrong", hashed)
    assert info.value.reason == STATUS_KEY_INVALID
    assert hashed not in info.value.message
