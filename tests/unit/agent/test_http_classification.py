"""The http-json adapter's classification of an extension's HTTP status (the extension contract's reply table)."""

from __future__ import annotations

import pytest

from services.agent.adapters.http_json import classify_http_status


@pytest.mark.parametrize(
    ("code", "has_errors", "expected"),
    [
        (200, False, "success"),
        (201, False, "success"),
        (204, False, "success"),
        (202, False, "accepted"),
        (400, True, "validation_failed"),
        (400, False, "permanent"),
        (401, False, "permanent"),
        (403, False, "permanent"),
        (404, False, "permanent"),
        (409, False, "permanent"),
        (422, True, "permanent"),
        (408, False, "transient"),
        (429, False, "transient"),
        (500, False, "transient"),
        (502, False, "transient"),
        (503, False, "transient"),
        (504, False, "transient"),
        (599, False, "transient"),
        (301, False, "permanent"),
        (100, False, "permanent"),
        (0, False, "permanent"),
        (600, False, "permanent"),
    ],
)
def test_classify_http_status(code: int, has_errors: bool, expected: str) -> None:
    assert classify_http_status(code, has_validation_errors=has_errors) == expected


def test_every_4xx_except_408_429_is_permanent() -> None:
    for code in range(400, 500):
        outcome = classify_http_status(code)
        assert outcome == ("transient" if code in (408, 429) else "permanent"), code
