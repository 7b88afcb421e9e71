"""The input limits (services.platform.limits): what they refuse, and that the Struct depth limit leaves every
response of the contract readable (the protobuf runtime refuses messages nested more than 100 levels)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from exthub.agent.v1 import agent_service_pb2
from exthub.catalog.v1 import catalog_service_pb2, resources_pb2
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from exthub.type.v1 import types_pb2
from services.platform.errors import InvalidArgument
from services.platform.limits import (
    MAX_REPEATED_ITEMS,
    MAX_STRING_CHARS,
    MAX_STRUCT_DEPTH,
    MAX_STRUCT_ENTRIES,
    check_json_value,
    check_message,
    ensure_valid_message,
    json_depth,
    undecodable_violation,
)

SERVICES = (
    execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"],
    catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"],
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"],
)


def nested(depth: int, *, lists: bool = False) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep (the object itself is level 1)."""
    inner: object = 1
    for _ in range(depth - 1):
        inner = [inner] if lists else {"a": inner}
    return {"leaf": inner}


# -- wire encoding of deep messages (the runtime refuses to build them) ----------------------------------


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


_NUMBER_VALUE = _varint((2 << 3) | 1) + struct.pack("<d", 1.0)


def struct_bytes(depth: int, *, lists: bool = False) -> bytes:
    """The encoding of ``nested(depth, lists=lists)`` as a Struct."""
    if lists:
        value = _NUMBER_VALUE
        for _ in range(depth - 1):
            value = _field(6, _field(1, value))  # Value.list_value → ListValue.values
        return _field(1, _field(1, b"leaf") + _field(2, value))
    encoded = _field(1, _field(1, b"leaf") + _field(2, _NUMBER_VALUE))
    for _ in range(depth - 1):
        encoded = _field(1, _field(1, b"a") + _field(2, _field(5, encoded)))  # Value.struct_value
    return encoded


def _struct_paths(
    message: pb_descriptor.Descriptor, seen: frozenset[str]
) -> Iterator[list[pb_descriptor.FieldDescriptor]]:
    for field in message.fields:
        sub = field.message_type
        if sub is None:
            continue
        if sub.full_name == "google.protobuf.Struct":
            yield [field]
        elif sub.GetOptions().map_entry:
            value = sub.fields_by_name["value"]
            if value.message_type is not None and value.message_type.full_name == "google.protobuf.Struct":
                yield [field]
        elif not sub.full_name.startswith("google.") and sub.full_name not in seen:
            for rest in _struct_paths(sub, seen | {sub.full_name}):
                yield [field, *rest]


def _wrap(path: list[pb_descriptor.FieldDescriptor], struct_encoding: bytes) -> bytes:
    encoded = struct_encoding
    for field in reversed(path):
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            encoded = _field(field.number, _field(1, b"k") + _field(2, encoded))
        else:
            encoded = _field(field.number, encoded)
    return encoded


def _every_struct_path() -> list[tuple[str, pb_descriptor.Descriptor, list[pb_descriptor.FieldDescriptor]]]:
    found = []
    for service in SERVICES:
        for method in service.methods:
            for message in (method.input_type, method.output_type):
                for path in _struct_paths(message, frozenset({message.full_name})):
                    label = f"{message.name}.{'.'.join(f.name for f in path)}"
                    found.append((label, message, path))
    return found


STRUCT_PATHS = _every_struct_path()


def test_the_contract_has_struct_paths_four_levels_down() -> None:
    labels = {label for label, _, _ in STRUCT_PATHS}
    assert "ListExecutionsResponse.executions.validation_errors.data" in labels
    assert "ListExtensionVersionsResponse.versions.services" in labels


@pytest.mark.parametrize("lists", [False, True], ids=["objects", "lists"])
@pytest.mark.parametrize(("label", "message", "path"), STRUCT_PATHS, ids=[p[0] for p in STRUCT_PATHS])
def test_a_struct_at_the_depth_limit_stays_readable_in_every_message(
    label: str, message: pb_descriptor.Descriptor, path: list[pb_descriptor.FieldDescriptor], lists: bool
) -> None:
    """Whatever message of the contract carries an accepted Struct, the runtime can still decode it."""
    cls = GetMessageClass(message)
    cls.FromString(_wrap(path, struct_bytes(MAX_STRUCT_DEPTH, lists=lists)))


def test_the_depth_limit_is_as_deep_as_the_runtime_allows_in_the_deepest_response() -> None:
    """32 is not arbitrary: one level more and the deepest response can no longer be decoded."""
    deepest = next(path for label, _, path in STRUCT_PATHS if label.startswith("ListExecutionsResponse.executions.v"))
    with pytest.raises(DecodeError):
        execution_service_pb2.ListExecutionsResponse.FromString(_wrap(deepest, struct_bytes(MAX_STRUCT_DEPTH + 1)))


def test_struct_depth_is_counted_in_json_levels() -> None:
    assert json_depth({}) == 1 and json_depth({"a": 1}) == 1 and json_depth({"a": [1]}) == 2
    assert json_depth(nested(MAX_STRUCT_DEPTH)) == MAX_STRUCT_DEPTH
    assert json_depth(nested(7, lists=True)) == 7
    assert json_depth("scalar") == 0


@pytest.mark.parametrize("lists", [False, True])
def test_a_struct_one_level_too_deep_is_refused_with_its_field(lists: bool) -> None:
    execution = execution_pb2.Execution(extension_version="extensions/echo/versions/1.0.0")
    execution.request.update(nested(MAX_STRUCT_DEPTH, lists=lists))
    assert check_message(execution_service_pb2.CreateExecutionRequest(execution=execution)) == []
    execution.request.Clear()
    execution.request.update(nested(MAX_STRUCT_DEPTH + 1, lists=lists))
    violations = check_message(execution_service_pb2.CreateExecutionRequest(execution=execution))
    assert [v.field for v in violations] == ["execution.request"]
    assert str(MAX_STRUCT_DEPTH) in violations[0].description


def test_unknown_enum_values_are_refused() -> None:
    request = execution_service_pb2.CreateExecutionRequest(
        execution=execution_pb2.Execution(extension_version="extensions/e/versions/1.0.0", priority=999)  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidArgument) as refused:
        ensure_valid_message(request)
    assert [v.field for v in refused.value.field_violations] == ["execution.priority"]
    version = resources_pb2.ExtensionVersion(
        profiles=[resources_pb2.ExecutionProfile(name="p", supported_priorities=[types_pb2.HIGH, 42])]  # type: ignore[list-item]
    )
    violations = check_message(catalog_service_pb2.CreateExtensionVersionRequest(version=version))
    assert [v.field for v in violations] == ["version.profiles[0].supported_priorities[1]"]


def test_sizes_of_strings_lists_and_maps_are_bounded() -> None:
    extension = resources_pb2.Extension(display_name="x" * (MAX_STRING_CHARS + 1))
    extension.tags.extend(["t"] * (MAX_REPEATED_ITEMS + 1))
    for index in range(MAX_REPEATED_ITEMS + 1):
        extension.labels[f"k{index}"] = "v"
    violations = check_message(catalog_service_pb2.CreateExtensionRequest(extension=extension))
    assert sorted(v.field for v in violations) == ["extension.display_name", "extension.labels", "extension.tags"]
    wide = struct_pb2.Struct()
    wide.update({f"k{index}": index for index in range(MAX_STRUCT_ENTRIES + 1)})
    request = execution_service_pb2.CreateExecutionRequest(execution=execution_pb2.Execution(request=wide))
    assert [v.field for v in check_message(request)] == ["execution.request"]


def test_json_from_extensions_gets_the_same_limits() -> None:
    assert check_json_value(nested(MAX_STRUCT_DEPTH), "responseData") == []
    assert [v.field for v in check_json_value(nested(MAX_STRUCT_DEPTH + 1), "responseData")] == ["responseData"]
    assert [v.field for v in check_json_value({"a": [0] * (MAX_STRUCT_ENTRIES + 1)}, "responseData")] == [
        "responseData.a"
    ]


def test_an_undecodable_request_names_the_offending_field() -> None:
    """What the interceptor answers when the runtime refuses a request (too deep, bad UTF-8)."""
    descriptor = execution_service_pb2.CreateExecutionRequest.DESCRIPTOR
    execution_field = execution_pb2.Execution.DESCRIPTOR.fields_by_name
    too_deep = _field(
        1,
        _field(execution_field["extension_version"].number, b"extensions/e/versions/1.0.0")
        + _field(execution_field["request"].number, struct_bytes(60)),
    )
    with pytest.raises(DecodeError):
        execution_service_pb2.CreateExecutionRequest.FromString(too_deep)
    violation = undecodable_violation(descriptor, too_deep)
    assert violation.field == "execution.request" and str(MAX_STRUCT_DEPTH) in violation.description
    bad_text = _field(1, _field(execution_field["extension_version"].number, b"\xff\xfe"))
    assert undecodable_violation(descriptor, bad_text).field == "execution.extension_version"
    labels = _field(1, _field(execution_field["labels"].number, _field(1, b"k") + _field(2, b"\xff")))
    assert undecodable_violation(descriptor, labels).field == "execution.labels['k']"
    assert undecodable_violation(descriptor, b"\x0a\xff\xff").field == "request"
    assert undecodable_violation(None, b"").field == "request"
