"""The one error mapping: HubError → google.rpc.Status, and the AIP-193 shape of reasons and metadata keys."""

from __future__ import annotations

import grpc
import pytest

from exthub.contract.errors import ERROR_DOMAIN, code_number, error_info, field_violations, precondition_violations
from services.platform.errors import (
    FailedPrecondition,
    FieldViolation,
    HubError,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)


def test_status_carries_error_info_and_field_violations() -> None:
    error = InvalidArgument(
        "bad", reason="INVALID_FIELD", metadata={"field": "name"}, field_violations=[FieldViolation("name", "empty")]
    )
    status = error.to_status()
    assert status.code == code_number(grpc.StatusCode.INVALID_ARGUMENT)
    info = error_info(status)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == ("INVALID_FIELD", ERROR_DOMAIN, {"field": "name"})
    assert field_violations(status) == [("name", "empty")]
    assert precondition_violations(status) == []


def test_status_carries_precondition_violations() -> None:
    error = FailedPrecondition(
        "not ready",
        reason="INPUTS_MISSING",
        precondition_violations=[PreconditionViolation("INPUT_NOT_UPLOADED", "document", "not uploaded")],
    )
    status = error.to_status()
    assert status.code == code_number(grpc.StatusCode.FAILED_PRECONDITION)
    info = error_info(status)
    assert info is not None and info.reason == "INPUTS_MISSING"
    assert precondition_violations(status) == [("INPUT_NOT_UPLOADED", "document", "not uploaded")]
    assert field_violations(status) == []


@pytest.mark.parametrize("key", ["http_status", "HttpStatus", "1st", "with-dash", ""])
def test_metadata_keys_must_be_lower_camel_case(key: str) -> None:
    with pytest.raises(ValueError, match="lowerCamelCase"):
        NotFound("missing", metadata={key: "x"})


@pytest.mark.parametrize("reason", ["notFound", "NOT-FOUND", "_X", "X_"])
def test_reasons_must_be_upper_snake_case(reason: str) -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        HubError("boom", reason=reason)
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        HubError("boom", precondition_violations=[PreconditionViolation(reason, "subject", "why")])


def test_well_formed_reason_and_keys_are_kept() -> None:
    error = NotFound("missing", reason="EXECUTION_NOT_FOUND", metadata={"httpStatus": "404", "executionId": "e1"})
    assert error.reason == "EXECUTION_NOT_FOUND" and error.metadata == {"httpStatus": "404", "executionId": "e1"}


def test_an_error_about_a_batch_item_names_its_fields_under_the_item() -> None:
    nested = InvalidArgument.field("agent_id", "is required").within("requests[2]")
    assert isinstance(nested, InvalidArgument)
    assert [(v.field, v.description) for v in nested.field_violations] == [("requests[2].agent_id", "is required")]
    assert nested.metadata == {"field": "requests[2].agent_id"} and nested.reason == "INVALID_FIELD"
    status = nested.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # an error without field violations is the same error
    refused = FailedPrecondition("not RUNNING", reason="INVALID_TRANSITION", metadata={"state": "QUEUED"})
    assert refused.within("requests[0]") is refused
