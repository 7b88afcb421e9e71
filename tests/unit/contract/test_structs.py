"""A Struct as plain JSON: exactly what ``json_format.MessageToDict`` gives, for every kind of value."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from exthub.contract.structs import struct_to_dict

SAMPLES: list[dict[str, Any]] = [
    {},
    {"message": "hello", "n": 3, "ratio": 0.5, "big": 2.0**60, "negative": -7},
    {"flag": True, "off": False, "nothing": None, "text": "", "unicode": "héllo ✓ \U0001f600"},
    {"nested": {"a": [1, 2, "x", [None, {"q": 1.5}]], "b": {"c": {"d": []}}}, "empty": {}},
    {"list": [True, None, {"k": "v"}, [], [[1]]]},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_equal_to_message_to_dict(value: dict[str, Any]) -> None:
    struct = struct_pb2.Struct()
    struct.update(value)
    converted = struct_to_dict(struct)
    expected = json_format.MessageToDict(struct)
    assert converted == expected
    assert list(converted) == list(expected)  # the same key order
    assert repr(converted) == repr(expected)  # the same types (numbers are floats, as the Struct holds them)


def test_a_value_with_no_kind_is_null() -> None:
    struct = struct_pb2.Struct()
    struct.fields["unset"].CopyFrom(struct_pb2.Value())
    struct.fields["list"].list_value.values.add()
    assert struct_to_dict(struct) == json_format.MessageToDict(struct) == {"unset": None, "list": [None]}


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused_like_message_to_dict(number: float) -> None:
    struct = struct_pb2.Struct()
    struct.fields["x"].list_value.values.add().number_value = number
    with pytest.raises(ValueError) as expected:
        json_format.MessageToDict(struct)
    with pytest.raises(ValueError) as converted:
        struct_to_dict(struct)
    assert str(converted.value) == str(expected.value)
