"""Unit: the port's input validation."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2

from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.workqueue.port import (
    MAX_DEAD_LETTER_DESCRIPTION,
    LeaseLost,
    validate_body,
    validate_dead_letter_reason,
    validate_delay,
    validate_filter,
    validate_lease_seconds,
    validate_max_messages,
    validate_message_id,
    validate_properties,
    validate_wait_seconds,
)


@pytest.mark.parametrize("message_id", ["a", "executions/0b7e:1", "x" * 128, "A.b_c-d:e/f"])
def test_valid_message_ids(message_id: str) -> None:
    assert validate_message_id(message_id) == message_id


@pytest.mark.parametrize("message_id", ["", " ", "x" * 129, "a b", "é", 5])
def test_invalid_message_ids(message_id: object) -> None:
    with pytest.raises(InvalidArgument):
        validate_message_id(message_id)  # type: ignore[arg-type]


def test_body_accepts_bytes_like_and_refuses_text() -> None:
    assert validate_body(bytearray(b"ab")) == b"ab"
    assert validate_body(memoryview(b"ab")) == b"ab"
    with pytest.raises(InvalidArgument):
        validate_body("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key", ["model", "profile", "priority", "tenant", "Model.Name", "a-b_c.d", "monkey", "tokens_used_total"]
)
def test_allowed_property_keys(key: str) -> None:
    assert validate_properties({key: "v"}) == {key: "v"}


@pytest.mark.parametrize(
    "key",
    ["key", "apiKey", "status_update_key", "sas", "Authorization", "bearer.token", "db-password", "clientSecret"],
)
def test_secret_like_property_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_properties({key: "v"})
    assert caught.value.field_violations[0].field == f"properties.{key}"


def test_properties_must_be_a_mapping() -> None:
    with pytest.raises(InvalidArgument):
        validate_properties([("a", "b")])  # type: ignore[arg-type]


def test_filter() -> None:
    assert validate_filter(None) == {}
    assert validate_filter({"model": "m"}) == {"model": "m"}
    with pytest.raises(InvalidArgument) as caught:
        validate_filter({"1": "x"})
    assert caught.value.field_violations[0].field == "filter"


def test_numbers() -> None:
    assert validate_lease_seconds(300) == 300.0
    assert validate_wait_seconds(0) == 0.0
    assert validate_delay(0) == 0.0
    assert validate_max_messages(100) == 100
    for bad in (True, "1", float("inf"), float("nan")):
        with pytest.raises(InvalidArgument):
            validate_lease_seconds(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        validate_delay(15 * 24 * 3600)
    with pytest.raises(InvalidArgument):
        validate_wait_seconds(301)
    with pytest.raises(InvalidArgument):
        validate_max_messages(True)


def test_dead_letter_reason() -> None:
    assert validate_dead_letter_reason("r", "d" * 5000) == ("r", "d" * MAX_DEAD_LETTER_DESCRIPTION)
    for reason in ("", "   ", "r" * 257):
        with pytest.raises(InvalidArgument):
            validate_dead_letter_reason(reason, "")


def test_lease_lost_is_a_failed_precondition() -> None:
    error = LeaseLost.for_message("m-1")
    assert isinstance(error, FailedPrecondition)
    assert error.reason == "LEASE_LOST"
    status = error.to_status()
    assert status.code == code_pb2.FAILED_PRECONDITION
