"""The hub's signing keys: storage, rotation, JWKS, detached body signatures and direct tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import pickle
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exthub.contract.jwk import jwk_thumbprint
from exthub.contract.signatures import SIGNATURE_HEADER, SignatureInvalid, verify_body_signature, verify_direct_token
from services.execution import signing
from services.execution.signing import KeyRingError, SigningKeyRing

HUB = "https://hub.example.test"
AUDIENCE = "https://echo.example.test"
BODY = b'{"executionId":"e1","requestParameters":{"x":1}}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def ring(tmp_path: Path) -> SigningKeyRing:
    return SigningKeyRing.load_or_create(tmp_path / "keys", hub_id=HUB)


def pem_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pem"))


# -- storage ------------------------------------------------------------------------------------------


def test_first_start_creates_one_private_key_file(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = SigningKeyRing.load_or_create(directory, hub_id=HUB)
    files = pem_files(directory)
    assert [f.name for f in files] == [f"{ring.current_kid}.pem"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert json.loads((directory / "keyring.json").read_text())["kids"] == [ring.current_kid]
    assert not list(directory.glob(".tmp-*"))


def test_restart_loads_the_same_key(tmp_path: Path) -> None:
    first = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    second = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    assert second.current_kid == first.current_kid
    assert verify_body_signature(first.sign_body(BODY), BODY, second.jwks())


def test_kid_is_the_rfc7638_thumbprint(ring: SigningKeyRing) -> None:
    (jwk,) = ring.jwks()["keys"]
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":"))
    assert jwk["kid"] == b64(hashlib.sha256(canonical.encode()).digest()) == ring.current_kid
    assert jwk_thumbprint(jwk) == ring.current_kid


def test_jwk_thumbprint_known_vector() -> None:
    # RFC 7517 Appendix A.1 example EC key; thumbprint computed per RFC 7638 section 3.
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        "use": "enc",
        "kid": "1",
    }
    expected_input = (
        b'{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",'
        b'"y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}'
    )
    assert jwk_thumbprint(jwk) == b64(hashlib.sha256(expected_input).digest())


def test_corrupt_manifest_is_refused(tmp_path: Path) -> None:
    SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    (tmp_path / "keyring.json").write_text('{"kids": ["../../etc/passwd"]}')
    with pytest.raises(KeyRingError):
        SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    (tmp_path / "keyring.json").write_text("not json")
    with pytest.raises(KeyRingError):
        SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)


def test_key_file_must_match_its_kid(tmp_path: Path) -> None:
    ring = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / f"{ring.current_kid}.pem").write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(KeyRingError, match="does not hold"):
        SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)


def test_missing_current_key_is_refused(tmp_path: Path) -> None:
    ring = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    (tmp_path / f"{ring.current_kid}.pem").unlink()
    with pytest.raises(KeyRingError, match="missing"):
        SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)


def test_an_unloaded_ring_cannot_sign(tmp_path: Path) -> None:
    ring = SigningKeyRing(hub_id=HUB, directory=tmp_path)
    with pytest.raises(KeyRingError, match="load_or_create"):
        ring.sign_body(BODY)
    assert ring.jwks() == {"keys": []}


def test_losing_the_first_start_race_uses_the_winners_key(tmp_path: Path) -> None:
    winner = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    # What a process that found no manifest, then lost the race to publish one, does:
    kids = signing._create_first_key(tmp_path)
    assert kids == [winner.current_kid]
    assert [f.name for f in pem_files(tmp_path)] == [f"{winner.current_kid}.pem"]
    assert not list(tmp_path.glob(".tmp-*"))


def _race(directory: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=30)
    ring = SigningKeyRing.load_or_create(Path(directory), hub_id=HUB)
    results.put(ring.current_kid)


@pytest.mark.parametrize("round_", range(3))
def test_processes_racing_first_start_end_with_one_key(tmp_path: Path, round_: int) -> None:
    context = multiprocessing.get_context("spawn")
    workers = 4
    barrier = context.Barrier(workers)
    results = context.Queue()
    directory = tmp_path / f"keys-{round_}"
    processes = [context.Process(target=_race, args=(str(directory), barrier, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    kids = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert len(set(kids)) == 1
    assert [f.name for f in pem_files(directory)] == [f"{kids[0]}.pem"]
    assert SigningKeyRing.load_or_create(directory, hub_id=HUB).current_kid == kids[0]


# -- the private key stays inside --------------------------------------------------------------------


def test_private_key_never_leaves(ring: SigningKeyRing) -> None:
    text = repr(ring)
    assert ring.current_kid in text
    assert "PRIVATE" not in text
    assert "EllipticCurvePrivateKey" not in text
    for name in dir(ring):
        if name.startswith("_"):
            continue
        value = getattr(ring, name)
        assert not isinstance(value, ec.EllipticCurvePrivateKey), name
    with pytest.raises(TypeError):
        pickle.dumps(ring)


def test_jwks_has_public_members_only(ring: SigningKeyRing) -> None:
    ring.rotate()
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 2
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
        assert "d" not in jwk
        assert (jwk["kty"], jwk["use"], jwk["alg"], jwk["crv"]) == ("EC", "sig", "ES256", "P-256")
        assert len(unb64(jwk["x"])) == len(unb64(jwk["y"])) == 32
        # Standard tooling reads it as a public key.
        assert isinstance(jwt.PyJWK(jwk).key, ec.EllipticCurvePublicKey)
    assert '"d"' not in json.dumps(jwks)


# -- body signatures ----------------------------------------------------------------------------------


def test_sign_body_is_a_detached_compact_jws(ring: SigningKeyRing) -> None:
    signature = ring.sign_body(BODY)
    header_b64, payload, sig_b64 = signature.split(".")
    assert payload == ""
    assert json.loads(unb64(header_b64)) == {"alg": "ES256", "kid": ring.current_kid, "typ": "JOSE"}
    assert len(unb64(sig_b64)) == 64
    assert SIGNATURE_HEADER == "Exthub-Signature"
    # RFC 7515 Appendix F: re-attaching the base64url payload gives an ordinary JWS that standard
    # tooling verifies.
    attached = f"{header_b64}.{b64(BODY)}.{sig_b64}"
    public = jwt.PyJWK(ring.jwks()["keys"][0]).key
    assert jwt.api_jws.PyJWS().decode(attached, public, algorithms=["ES256"]) == BODY


def test_round_trip(ring: SigningKeyRing) -> None:
    header = verify_body_signature(ring.sign_body(BODY), BODY, ring.jwks())
    assert header["kid"] == ring.current_kid
    assert verify_body_signature(ring.sign_body(b""), b"", ring.jwks())


@pytest.mark.parametrize("tampered", [BODY + b" ", BODY.replace(b"1", b"2"), b"", BODY[:-1]])
def test_tampered_body_is_refused(ring: SigningKeyRing, tampered: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        verify_body_signature(ring.sign_body(BODY), tampered, ring.jwks())


def test_tampered_signature_is_refused(ring: SigningKeyRing) -> None:
    header, _, sig = ring.sign_body(BODY).split(".")
    raw = bytearray(unb64(sig))
    raw[10] ^= 1
    with pytest.raises(SignatureInvalid):
        verify_body_signature(f"{header}..{b64(bytes(raw))}", BODY, ring.jwks())


def test_unknown_kid_is_refused(tmp_path: Path) -> None:
    ours = SigningKeyRing.load_or_create(tmp_path / "a", hub_id=HUB)
    theirs = SigningKeyRing.load_or_create(tmp_path / "b", hub_id=HUB)
    with pytest.raises(SignatureInvalid, match="unknown"):
        verify_body_signature(theirs.sign_body(BODY), BODY, ours.jwks())
    # A header that claims our kid but was signed with another key.
    _, _, their_sig = theirs.sign_body(BODY).split(".")
    our_header = ours.sign_body(BODY).split(".")[0]
    with pytest.raises(SignatureInvalid):
        verify_body_signature(f"{our_header}..{their_sig}", BODY, ours.jwks())


def _forge(header: dict[str, Any], signing_input_body: bytes, sign: Any) -> str:
    encoded = b64(json.dumps(header).encode())
    return f"{encoded}..{b64(sign(f'{encoded}.{b64(signing_input_body)}'.encode()))}"


def test_alg_none_is_refused(ring: SigningKeyRing) -> None:
    forged = _forge({"alg": "none", "kid": ring.current_kid}, BODY, lambda _: b"")
    with pytest.raises(SignatureInvalid, match="algorithm"):
        verify_body_signature(forged, BODY, ring.jwks())


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_the_public_key_as_secret_is_refused(ring: SigningKeyRing, alg: str) -> None:
    jwk = ring.jwks()["keys"][0]
    public_pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for secret in (public_pem, json.dumps(jwk).encode()):
        forged = _forge(
            {"alg": alg, "kid": ring.current_kid},
            BODY,
            lambda data, secret=secret: hmac.new(secret, data, digest).digest(),
        )
        with pytest.raises(SignatureInvalid, match="algorithm"):
            verify_body_signature(forged, BODY, ring.jwks())


def test_other_algorithms_and_headers_are_refused(ring: SigningKeyRing) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for header in (
        {"alg": "ES384", "kid": ring.current_kid},
        {"alg": "ES256", "kid": ring.current_kid, "crit": ["exp"]},
        {"alg": "ES256", "kid": ring.current_kid, "b64": False, "crit": ["b64"]},
        {"alg": "ES256"},
    ):
        forged = _forge(header, BODY, lambda data: key.sign(data, ec.ECDSA(hashes.SHA256())))
        with pytest.raises(SignatureInvalid):
            verify_body_signature(forged, BODY, ring.jwks())


@pytest.mark.parametrize(
    "garbage",
    ["", "a", "a.b", "a..b..c", "!!!..!!!", "e30..", "W10..AAAA", "x" * 10_000],
)
def test_malformed_signatures_are_refused(ring: SigningKeyRing, garbage: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify_body_signature(garbage, BODY, ring.jwks())


def test_attached_payload_is_refused(ring: SigningKeyRing) -> None:
    header, _, sig = ring.sign_body(BODY).split(".")
    with pytest.raises(SignatureInvalid, match="detached"):
        verify_body_signature(f"{header}.{b64(BODY)}.{sig}", BODY, ring.jwks())


def test_unusable_key_sets_are_refused(ring: SigningKeyRing) -> None:
    good = ring.jwks()["keys"][0]
    kid = ring.current_kid
    for jwks in (
        {},
        {"keys": "x"},
        {"keys": [{"kid": kid, "kty": "RSA", "n": "AQAB", "e": "AQAB"}]},
        {"keys": [{"kid": kid, "kty": "EC", "crv": "P-256"}]},  # no coordinates
        {"keys": [{**good, "crv": "P-384"}]},
        {"keys": [{**good, "use": "enc"}]},
        {"keys": [{**good, "alg": "ES384"}]},
        {"keys": [good, good]},  # ambiguous kid
    ):
        with pytest.raises(SignatureInvalid):
            verify_body_signature(ring.sign_body(BODY), BODY, jwks)


def test_point_not_on_curve_is_refused(ring: SigningKeyRing) -> None:
    jwk = dict(ring.jwks()["keys"][0])
    jwk["y"] = b64((int.from_bytes(unb64(jwk["y"]), "big") ^ 1).to_bytes(32, "big"))
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify_body_signature(ring.sign_body(BODY), BODY, {"keys": [jwk]})


# -- rotation -----------------------------------------------------------------------------------------


def test_rotation_keeps_old_signatures_verifiable(tmp_path: Path) -> None:
    ring = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    first_kid = ring.current_kid
    old_signature = ring.sign_body(BODY)
    new_kid = ring.rotate()
    assert new_kid == ring.current_kid != first_kid
    assert ring.kids == (new_kid, first_kid)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid, first_kid]
    assert verify_body_signature(old_signature, BODY, ring.jwks())["kid"] == first_kid
    assert verify_body_signature(ring.sign_body(BODY), BODY, ring.jwks())["kid"] == new_kid
    # A restart (or another process) sees the rotation.
    assert SigningKeyRing.load_or_create(tmp_path, hub_id=HUB).kids == (new_kid, first_kid)


def test_rotation_keeps_at_most_three_keys(tmp_path: Path) -> None:
    ring = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    oldest = ring.current_kid
    oldest_signature = ring.sign_body(BODY)
    kids = [ring.rotate() for _ in range(3)]
    assert ring.kids == (kids[2], kids[1], kids[0])
    assert len(ring.jwks()["keys"]) == 3
    assert {f.stem for f in pem_files(tmp_path)} == set(ring.kids)
    with pytest.raises(SignatureInvalid, match="unknown"):
        verify_body_signature(oldest_signature, BODY, ring.jwks())
    assert oldest not in ring.kids


def test_reload_picks_up_a_rotation_by_another_process(tmp_path: Path) -> None:
    a = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    b = SigningKeyRing.load_or_create(tmp_path, hub_id=HUB)
    new_kid = a.rotate()
    assert b.current_kid != new_kid
    b.reload()
    assert b.current_kid == new_kid
    assert b.rotate() not in a.kids  # rotations from b build on a's manifest
    a.reload()
    assert a.kids == b.kids
    assert len(a.kids) == 3


# -- direct tokens ------------------------------------------------------------------------------------


def issue(ring: SigningKeyRing, *, now: datetime | None = None, ttl: int = 300) -> str:
    return ring.issue_direct_token(
        execution="executions/0b7e",
        extension="extensions/echo",
        version="1.0.0",
        profile="direct",
        tenant="tenant-1",
        user="user-1",
        audience=AUDIENCE,
        ttl_seconds=ttl,
        now=now or datetime.now(UTC),
    )


def test_direct_token_claims(ring: SigningKeyRing) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = issue(ring, now=now, ttl=300)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": ring.current_kid, "typ": "JWT"}
    claims = verify_direct_token(token, ring.jwks(), issuer=HUB, audience=AUDIENCE)
    assert claims["iss"] == HUB
    assert claims["sub"] == claims["execution"] == "executions/0b7e"
    assert claims["aud"] == AUDIENCE
    assert claims["iat"] == claims["nbf"] == int(now.timestamp())
    assert claims["exp"] == int(now.timestamp()) + 300
    assert (claims["extension"], claims["version"], claims["profile"]) == ("extensions/echo", "1.0.0", "direct")
    assert (claims["tid"], claims["oid"]) == ("tenant-1", "user-1")
    assert claims["jti"]
    assert issue(ring) != issue(ring)


def test_direct_token_expiry(ring: SigningKeyRing) -> None:
    expired = issue(ring, now=datetime.now(UTC) - timedelta(hours=1), ttl=60)
    with pytest.raises(SignatureInvalid, match="Expired"):
        verify_direct_token(expired, ring.jwks(), issuer=HUB, audience=AUDIENCE)
    assert verify_direct_token(expired, ring.jwks(), issuer=HUB, audience=AUDIENCE, leeway_seconds=7200)
    future = issue(ring, now=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(SignatureInvalid):
        verify_direct_token(future, ring.jwks(), issuer=HUB, audience=AUDIENCE)


def test_direct_token_wrong_audience_or_issuer(ring: SigningKeyRing) -> None:
    token = issue(ring)
    with pytest.raises(SignatureInvalid, match="Audience"):
        verify_direct_token(token, ring.jwks(), issuer=HUB, audience="https://other.test")
    with pytest.raises(SignatureInvalid, match="Issuer"):
        verify_direct_token(token, ring.jwks(), issuer="https://other-hub.test", audience=AUDIENCE)


def test_direct_token_from_another_key_or_tampered(tmp_path: Path, ring: SigningKeyRing) -> None:
    other = SigningKeyRing.load_or_create(tmp_path / "other", hub_id=HUB)
    with pytest.raises(SignatureInvalid, match="unknown"):
        verify_direct_token(issue(other), ring.jwks(), issuer=HUB, audience=AUDIENCE)
    header, payload, sig = issue(ring).split(".")
    claims = json.loads(unb64(payload))
    claims["tid"] = "tenant-2"
    with pytest.raises(SignatureInvalid):
        verify_direct_token(
            f"{header}.{b64(json.dumps(claims).encode())}.{sig}", ring.jwks(), issuer=HUB, audience=AUDIENCE
        )


def test_direct_token_forged_with_weak_algorithms(ring: SigningKeyRing) -> None:
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "iss": HUB,
        "sub": "executions/x",
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "execution": "executions/x",
        "extension": "e",
        "version": "1",
        "profile": "p",
        "tid": "t",
        "oid": "o",
    }
    header = b64(json.dumps({"alg": "none", "kid": ring.current_kid}).encode())
    with pytest.raises(SignatureInvalid, match="algorithm"):
        verify_direct_token(f"{header}.{b64(json.dumps(claims).encode())}.", ring.jwks(), issuer=HUB, audience=AUDIENCE)
    public_pem = (
        jwt.PyJWK(ring.jwks()["keys"][0])
        .key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    encoded_header = b64(json.dumps({"alg": "HS256", "kid": ring.current_kid, "typ": "JWT"}).encode())
    signing_input = f"{encoded_header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(SignatureInvalid, match="algorithm"):
        verify_direct_token(f"{signing_input}.{b64(mac)}", ring.jwks(), issuer=HUB, audience=AUDIENCE)


def test_direct_token_must_carry_execution_claims(ring: SigningKeyRing) -> None:
    now = int(datetime.now(UTC).timestamp())
    key: Any = ring._keys[ring.current_kid]  # test-only access to sign a token lacking claims
    token = jwt.encode(
        {"iss": HUB, "sub": "executions/x", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 60},
        key,
        algorithm="ES256",
        headers={"kid": ring.current_kid},
    )
    with pytest.raises(SignatureInvalid, match="claim"):
        verify_direct_token(token, ring.jwks(), issuer=HUB, audience=AUDIENCE)


@pytest.mark.parametrize("ttl", [0, -5])
def test_direct_token_ttl_must_be_positive(ring: SigningKeyRing, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        issue(ring, ttl=ttl)


def test_direct_token_needs_aware_now(ring: SigningKeyRing) -> None:
    with pytest.raises(ValueError, match="aware"):
        issue(ring, now=datetime(2026, 1, 1))


def test_verify_does_not_need_the_ring(ring: SigningKeyRing) -> None:
    """Extensions verify with the published JWKS alone (what GET /v1/signingKeys returns)."""
    published = json.loads(json.dumps(ring.jwks()))
    assert verify_body_signature(ring.sign_body(BODY), BODY, published)
    assert verify_direct_token(issue(ring), published, issuer=HUB, audience=AUDIENCE)
