"""AIP-158 page size coercion and signed page tokens."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from services.platform.errors import InvalidArgument
from services.platform.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageTokenCodec, resolve_page_size

SECRET = b"0123456789abcdef0123456789abcdef"
QUERY = {"parent": "", "filter": 'state = "ACTIVE"', "order_by": "create_time desc", "show_deleted": False}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def invalid_token(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InvalidArgument) as err:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert err.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in err.value.field_violations] == ["page_token"]
    return err.value.field_violations[0].description


@pytest.mark.parametrize(
    ("requested", "want"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (50, 50), (1000, 1000), (1001, MAX_PAGE_SIZE), (10**9, 1000)],
)
def test_resolve_page_size(requested: int, want: int) -> None:
    assert resolve_page_size(requested) == want


def test_negative_page_size() -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve_page_size(-1)
    assert err.value.reason == "INVALID_FIELD"
    assert [v.field for v in err.value.field_violations] == ["page_size"]


def test_round_trip_url_safe() -> None:
    codec = PageTokenCodec(SECRET)
    state = {"c": "continuation+/=", "n": 3, "unicode": "☃"}
    token = codec.encode(state, query=QUERY)
    assert all(ch.isalnum() or ch in "-_" for ch in token)
    assert codec.decode(token, query=QUERY) == state


def test_page_size_and_token_do_not_bind() -> None:
    codec = PageTokenCodec(SECRET)
    token = codec.encode({"k": 1}, query={**QUERY, "page_size": 10})
    assert codec.decode(token, query={**QUERY, "page_size": 500, "page_token": token}) == {"k": 1}


@pytest.mark.parametrize(
    "change",
    [
        {"filter": 'state = "DELETED"'},
        {"order_by": "create_time"},
        {"show_deleted": True},
        {"parent": "extensions/echo"},
        {"extra": 1},
    ],
)
def test_other_query_is_refused(change: dict[str, object]) -> None:
    codec = PageTokenCodec(SECRET)
    token = codec.encode({"k": 1}, query=QUERY)
    assert "different query" in invalid_token(codec.decode, token, query={**QUERY, **change})


def test_tampering_is_refused() -> None:
    codec = PageTokenCodec(SECRET)
    token = codec.encode({"k": 1}, query=QUERY)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        bad = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        invalid_token(codec.decode, bad, query=QUERY)


@pytest.mark.parametrize(
    "mutate", [lambda t: t[:-1], lambda t: t[:10], lambda t: t + "A", lambda t: t + "!", lambda t: ""]
)
def test_truncated_or_garbage_is_refused(mutate: object) -> None:
    codec = PageTokenCodec(SECRET)
    token = codec.encode({"k": 1}, query=QUERY)
    invalid_token(codec.decode, mutate(token), query=QUERY)  # type: ignore[operator]


@pytest.mark.parametrize("bad", ["not a token", "====", "a" * 9000, "é", "AAAA\n"])
def test_garbage_is_refused(bad: str) -> None:
    invalid_token(PageTokenCodec(SECRET).decode, bad, query=QUERY)


def test_other_secret_is_refused() -> None:
    token = PageTokenCodec(SECRET).encode({"k": 1}, query=QUERY)
    invalid_token(PageTokenCodec(b"another-secret-of-32-bytes-xxxxx").decode, token, query=QUERY)


def test_expiry_with_injected_clock() -> None:
    clock = Clock()
    codec = PageTokenCodec(SECRET, clock=clock)
    token = codec.encode({"k": 1}, query=QUERY)
    clock.now += timedelta(hours=23, minutes=59)
    assert codec.decode(token, query=QUERY) == {"k": 1}
    clock.now += timedelta(minutes=2)
    assert "expired" in invalid_token(codec.decode, token, query=QUERY)


def test_token_from_the_future_is_refused() -> None:
    clock = Clock()
    codec = PageTokenCodec(SECRET, clock=clock)
    token = codec.encode({"k": 1}, query=QUERY)
    clock.now -= timedelta(hours=1)
    assert "future" in invalid_token(codec.decode, token, query=QUERY)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        PageTokenCodec(b"short")
