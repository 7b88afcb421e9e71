"""Object provider contract: the names every provider accepts (execution ids, kinds, object names)."""

from __future__ import annotations

import pytest

from services.objects.port import ObjectRef, validate_execution_id, validate_object_name
from services.platform.errors import InvalidArgument

EXECUTION = "3f2b8c1e-9a4d-4c5e-8f70-1a2b3c4d5e6f"


@pytest.mark.parametrize("execution", [EXECUTION, "e1", "a" * 64, "0-1"])
def test_valid_execution_ids(execution: str) -> None:
    assert validate_execution_id(execution) == execution


@pytest.mark.parametrize(
    "execution", ["", "a" * 65, "..", "../x", "A1", "a/b", "-a", "a_b", "%2e%2e", "/etc", EXECUTION.upper()]
)
def test_invalid_execution_ids(execution: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_execution_id(execution)
    assert info.value.field_violations[0].field == "object.execution"


@pytest.mark.parametrize("name", ["a", "report.pdf", "a_b-c.d", "x" + "y" * 62])
def test_valid_object_names(name: str) -> None:
    assert validate_object_name(name) == name


@pytest.mark.parametrize("name", ["", "..", ".hidden", "1abc", "Abc", "a/b", "a\\b", "x" * 64, "a b", "a%2f"])
def test_invalid_object_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_object_name(name)


def test_object_ref_validates_on_construction() -> None:
    assert ObjectRef(EXECUTION, "input", "data.csv").key == f"{EXECUTION}/input/data.csv"
    with pytest.raises(InvalidArgument):
        ObjectRef(EXECUTION, "secret", "data.csv")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ObjectRef("..", "input", "data.csv")
