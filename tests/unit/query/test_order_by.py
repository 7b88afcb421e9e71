"""AIP-132 order_by parsing."""

from __future__ import annotations

import pytest

from services.platform.errors import InvalidArgument
from services.platform.query.filter import parse_order_by
from services.platform.query.predicate import SortKey

ALLOWED = {"create_time": ("create_time",), "display_name": ("display_name",), "labels.env": ("labels", "env")}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", []),
        ("   ", []),
        ("create_time", [SortKey(("create_time",), False)]),
        ("create_time desc", [SortKey(("create_time",), True)]),
        ("create_time DESC", [SortKey(("create_time",), True)]),
        ("create_time asc", [SortKey(("create_time",), False)]),
        (
            "create_time desc, display_name",
            [SortKey(("create_time",), True), SortKey(("display_name",), False)],
        ),
        ("  display_name  ,create_time   desc ", [SortKey(("display_name",)), SortKey(("create_time",), True)]),
        ("labels.env desc", [SortKey(("labels", "env"), True)]),
    ],
)
def test_valid(text: str, want: list[SortKey]) -> None:
    assert parse_order_by(text, ALLOWED) == want


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name", "cannot order by 'name'; allowed fields: create_time, display_name, labels.env"),
        ("create_time sideways", "unknown direction"),
        ("create_time desc extra", "should be"),
        ("create_time,,display_name", "item 2 is empty"),
        ("create_time,", "item 2 is empty"),
        ("create_time, create_time desc", "more than once"),
        ("x" * 501, "too long"),
        ("' OR 1=1 --", "should be"),
        ("x';DROP--", "cannot order by"),
    ],
)
def test_invalid(text: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_order_by(text, ALLOWED)
    assert err.value.reason == "INVALID_FIELD"
    assert [v.field for v in err.value.field_violations] == ["order_by"]
    assert needle in err.value.field_violations[0].description
