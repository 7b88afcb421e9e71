"""The semver storage key must order exactly like semantic-version precedence."""

from __future__ import annotations

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from services.catalog.domain.versions import is_prerelease, parse_version_id, sort_key
from services.platform.errors import InvalidArgument

_numbers = st.integers(min_value=0, max_value=10**10 - 1)
_alnum = st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True).filter(lambda s: not s.isdigit())
_ident = st.one_of(_numbers.map(str), _alnum)
_prerelease = st.lists(_ident, min_size=0, max_size=4)


@st.composite
def versions(draw: st.DrawFn) -> str:
    core = f"{draw(_numbers)}.{draw(_numbers)}.{draw(_numbers)}"
    pre = draw(_prerelease)
    return f"{core}-{'.'.join(pre)}" if pre else core


@given(versions(), versions())
def test_sort_key_order_matches_semver_precedence(a: str, b: str) -> None:
    expected = semver.Version.parse(a).compare(b)
    key_a, key_b = sort_key(a), sort_key(b)
    actual = (key_a > key_b) - (key_a < key_b)
    assert actual == expected, (a, b, key_a, key_b)


def test_prereleases_and_numeric_parts_order_newest_first() -> None:
    ids = ["1.9.0", "2.0.0-rc.1", "1.10.0", "1.10.0-alpha", "1.10.0-alpha.beta", "1.10.0-alpha.1"]
    ordered = sorted(ids, key=sort_key, reverse=True)
    assert ordered == ["2.0.0-rc.1", "1.10.0", "1.10.0-alpha.beta", "1.10.0-alpha.1", "1.10.0-alpha", "1.9.0"]


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0+build.1", "latest", "", "1.0.0-", "1.0.0-a..b"])
def test_invalid_version_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_version_id(bad)
    assert caught.value.field_violations[0].field == "version_id"


def test_prerelease_detection() -> None:
    assert is_prerelease("2.0.0-rc.1")
    assert not is_prerelease("2.0.0")
