"""Input limits at the edge of every service: every size and depth limit in one place, and the checks that
apply them to any request message (:func:`check_message`), to JSON that becomes a Struct
(:func:`check_json_value`) and to a request that could not even be decoded (:func:`undecodable_violation`).

The edge interceptor (:mod:`services.platform.interceptors`) runs :func:`check_message` on every request
before the handler, so a handler never sees an unknown enum value, a Struct nested too deeply or an oversized
string, list or map; domain rules may be stricter for particular fields. Every refusal is INVALID_ARGUMENT
with one field violation per offending field.

Why :data:`MAX_STRUCT_DEPTH` is 32: a ``google.protobuf.Struct`` nests three messages per JSON level (Struct,
its map entry, Value), and both the Python runtime (upb) and Envoy's transcoder refuse a message nested more
than 100 levels. The deepest message that carries a Struct is four levels down (e.g.
``ListExecutionsResponse.executions[].validation_errors[].data``, ``ListExtensionVersionsResponse.versions[]
.services[…]``); there a Struct of 32 levels still parses and transcodes, one of 33 does not. So a Struct that
is accepted (a request, a version's service configuration, an extension's result or report) can never make a
later response unreadable. ``tests/unit/platform/test_limits.py`` proves it for every RPC of the contract.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message as pb_message
from google.protobuf.message_factory import GetMessageClass

from services.platform.errors import FieldViolation, InvalidArgument

__all__ = [
    "GATEWAY_MAX_REQUEST_HEADERS_KIB",
    "MAX_BYTES_FIELD",
    "MAX_MESSAGE_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_REPEATED_ITEMS",
    "MAX_STRING_CHARS",
    "MAX_STRUCT_DEPTH",
    "MAX_STRUCT_ENTRIES",
    "MAX_STRUCT_STRING_CHARS",
    "MAX_TOKEN_BYTES",
    "MAX_VIOLATIONS",
    "check_json_value",
    "check_message",
    "ensure_valid_message",
    "json_depth",
    "undecodable_violation",
]

#: The largest gRPC message a service sends or receives (also the gateway's REST body limit).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: gRPC metadata a service accepts (soft and hard limit alike, so a request is never refused at random).
MAX_METADATA_BYTES = 64 * 1024
#: A bearer token the services verify (a larger one is refused as an invalid token).
MAX_TOKEN_BYTES = 16 * 1024
#: Envoy's limit on a request's headers (``max_request_headers_kb``): below the services' metadata limit with
#: room for what Envoy adds (forwarded-for, request id, claim headers, timeouts), so whatever the gateway lets
#: through is accepted by the service, and a larger request gets the gateway's 431.
GATEWAY_MAX_REQUEST_HEADERS_KIB = 32
#: JSON levels of a Struct (the Struct itself is level 1; each nested object or list adds one).
MAX_STRUCT_DEPTH = 32
#: Fields of one Struct, or items of one list inside a Struct.
MAX_STRUCT_ENTRIES = 10_000
#: A string value inside a Struct.
MAX_STRUCT_STRING_CHARS = 1024 * 1024
#: Any string field of a request message (domain rules are often stricter).
MAX_STRING_CHARS = 16 * 1024
#: Any bytes field of a request message.
MAX_BYTES_FIELD = MAX_MESSAGE_BYTES
#: Items of a repeated field or entries of a map field.
MAX_REPEATED_ITEMS = 1_000
#: At most this many violations are reported for one request.
MAX_VIOLATIONS = 20

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_STRUCT_TYPES = frozenset({_STRUCT, _VALUE, _LIST_VALUE})
_MAX_KEY_IN_PATH = 64
FD = pb_descriptor.FieldDescriptor


class _Full(Exception):
    """Enough violations were found."""


@dataclass
class _Collector:
    violations: list[FieldViolation]

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))
        if len(self.violations) >= MAX_VIOLATIONS:
            raise _Full


def check_message(message: pb_message.Message, *, prefix: str = "") -> list[FieldViolation]:
    """Every field of ``message`` (at any depth) that breaks a limit; empty when the message is acceptable."""
    collector = _Collector([])
    with contextlib.suppress(_Full):
        _check_message(message, prefix, collector)
    return collector.violations


def ensure_valid_message(message: pb_message.Message) -> None:
    """Raise INVALID_ARGUMENT with the field violations of :func:`check_message`, if any."""
    violations = check_message(message)
    if violations:
        raise InvalidArgument(
            f"invalid {violations[0].field}: {violations[0].description}"
            + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""),
            metadata={"field": violations[0].field},
            field_violations=violations,
        )


def check_json_value(value: Any, field: str) -> list[FieldViolation]:
    """The limits of a Struct applied to plain JSON (``dict``/``list``/scalars), e.g. an extension's reply."""
    collector = _Collector([])
    with contextlib.suppress(_Full):
        _check_json(value, field, collector)
    return collector.violations


def json_depth(value: Any) -> int:
    """JSON levels of ``value``: 0 for a scalar, 1 for a flat object or list, +1 per nested container."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            depth += 1
            stack.extend((child, depth) for child in item.values())
        elif isinstance(item, list | tuple):
            depth += 1
            stack.extend((child, depth) for child in item)
        deepest = max(deepest, depth)
    return deepest


# -- walking messages ---------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _key(prefix: str, key: object) -> str:
    text = str(key)
    if len(text) > _MAX_KEY_IN_PATH:
        text = text[:_MAX_KEY_IN_PATH] + "…"
    return f"{prefix}[{text!r}]"


def _check_message(message: pb_message.Message, path: str, out: _Collector) -> None:
    name = message.DESCRIPTOR.full_name
    if name in _STRUCT_TYPES:
        _check_struct_value(message, path or "request", out)
        return
    for field, value in message.ListFields():
        field_path = _join(path, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if len(value) > MAX_REPEATED_ITEMS:
                out.add(field_path, f"at most {MAX_REPEATED_ITEMS} entries")
                continue
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if isinstance(key, str) and len(key) > MAX_STRING_CHARS:
                    out.add(field_path, f"keys have at most {MAX_STRING_CHARS} characters")
                    continue
                _check_single(value_field, item, _key(field_path, key), out)
        elif field.is_repeated:
            if len(value) > MAX_REPEATED_ITEMS:
                out.add(field_path, f"at most {MAX_REPEATED_ITEMS} items")
                continue
            for index, item in enumerate(value):
                _check_single(field, item, f"{field_path}[{index}]", out)
        else:
            _check_single(field, value, field_path, out)


def _check_single(field: pb_descriptor.FieldDescriptor, value: Any, path: str, out: _Collector) -> None:
    if field.type == FD.TYPE_MESSAGE:
        _check_message(value, path, out)
    elif field.type == FD.TYPE_STRING:
        if len(value) > MAX_STRING_CHARS:
            out.add(path, f"at most {MAX_STRING_CHARS} characters")
    elif field.type == FD.TYPE_BYTES:
        if len(value) > MAX_BYTES_FIELD:
            out.add(path, f"at most {MAX_BYTES_FIELD} bytes")
    elif field.type == FD.TYPE_ENUM:
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            out.add(path, f"{value} is not a value of {enum.name}")


def _check_struct_value(message: pb_message.Message, path: str, out: _Collector) -> None:
    """A Struct, Value or ListValue: depth, entries and string sizes (iteratively: no recursion limit)."""
    stack: list[tuple[Any, str, int]] = [(message, path, 0)]
    while stack:
        item, item_path, depth = stack.pop()
        kind = item.DESCRIPTOR.full_name
        if kind == _VALUE:
            which = item.WhichOneof("kind")
            if which == "struct_value":
                stack.append((item.struct_value, item_path, depth))
            elif which == "list_value":
                stack.append((item.list_value, item_path, depth))
            elif which == "string_value" and len(item.string_value) > MAX_STRUCT_STRING_CHARS:
                out.add(item_path, f"strings have at most {MAX_STRUCT_STRING_CHARS} characters")
            continue
        depth += 1
        if depth > MAX_STRUCT_DEPTH:
            out.add(path, f"nested more than {MAX_STRUCT_DEPTH} levels deep")
            return
        if kind == _STRUCT:
            if len(item.fields) > MAX_STRUCT_ENTRIES:
                out.add(item_path, f"at most {MAX_STRUCT_ENTRIES} fields per object")
                continue
            for key, child in item.fields.items():
                if len(key) > MAX_STRING_CHARS:
                    out.add(item_path, f"keys have at most {MAX_STRING_CHARS} characters")
                    continue
                stack.append((child, _join(item_path, key) if _plain(key) else _key(item_path, key), depth))
        else:  # ListValue
            if len(item.values) > MAX_STRUCT_ENTRIES:
                out.add(item_path, f"at most {MAX_STRUCT_ENTRIES} items per list")
                continue
            stack.extend((child, f"{item_path}[{index}]", depth) for index, child in enumerate(item.values))


def _check_json(value: Any, path: str, out: _Collector) -> None:
    if json_depth(value) > MAX_STRUCT_DEPTH:
        out.add(path, f"nested more than {MAX_STRUCT_DEPTH} levels deep")
        return
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, item_path = stack.pop()
        if isinstance(item, Mapping):
            if len(item) > MAX_STRUCT_ENTRIES:
                out.add(item_path, f"at most {MAX_STRUCT_ENTRIES} fields per object")
                continue
            for key, child in item.items():
                if not isinstance(key, str) or len(key) > MAX_STRING_CHARS:
                    out.add(item_path, f"keys are strings of at most {MAX_STRING_CHARS} characters")
                    continue
                stack.append((child, _join(item_path, key) if _plain(key) else _key(item_path, key)))
        elif isinstance(item, list | tuple):
            if len(item) > MAX_STRUCT_ENTRIES:
                out.add(item_path, f"at most {MAX_STRUCT_ENTRIES} items per list")
                continue
            stack.extend((child, f"{item_path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str) and len(item) > MAX_STRUCT_STRING_CHARS:
            out.add(item_path, f"strings have at most {MAX_STRUCT_STRING_CHARS} characters")


def _plain(key: str) -> bool:
    return 0 < len(key) <= _MAX_KEY_IN_PATH and key.replace("_", "a").replace("-", "a").isalnum() and key.isascii()


# -- requests that cannot be decoded -------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5


def undecodable_violation(descriptor: pb_descriptor.Descriptor | None, data: bytes) -> FieldViolation:
    """Why a request that the protobuf runtime refused cannot be decoded, and where (best effort).

    The runtime only says "too deep" or "bad UTF-8"; the request's wire format is walked (without the
    runtime's depth limit) to name the field: the most deeply nested one, or the first that does not decode.
    """
    if descriptor is None:
        return FieldViolation("request", "cannot be decoded")
    try:
        return _locate(descriptor, data, "")
    except (ValueError, IndexError, RecursionError):
        return FieldViolation("request", "cannot be decoded")


def _locate(descriptor: pb_descriptor.Descriptor, data: bytes, path: str) -> FieldViolation:
    if descriptor.full_name in _STRUCT_TYPES:
        if _wire_depth(descriptor, data) > 3 * MAX_STRUCT_DEPTH:
            return FieldViolation(path or "request", f"nested more than {MAX_STRUCT_DEPTH} levels deep")
        return FieldViolation(path or "request", "cannot be decoded")
    deepest: tuple[int, pb_descriptor.Descriptor, bytes, str] | None = None
    for number, wire_type, payload in _wire_fields(data):
        field = descriptor.fields_by_number.get(number)
        if field is None or wire_type != _LENGTH or payload is None:
            continue
        child = _child(field, payload, _join(path, field.name))
        if isinstance(child, FieldViolation):
            return child
        if child is None:
            continue
        sub, sub_payload, sub_path = child
        depth = _wire_depth(sub, sub_payload)
        if not _decodes(sub, sub_payload) and depth <= 3 * MAX_STRUCT_DEPTH:
            return _locate(sub, sub_payload, sub_path)  # not a depth problem: this field itself is broken
        if deepest is None or depth > deepest[0]:
            deepest = (depth, sub, sub_payload, sub_path)
    if deepest is not None:
        return _locate(deepest[1], deepest[2], deepest[3])
    return FieldViolation(path or "request", "cannot be decoded")


def _child(
    field: pb_descriptor.FieldDescriptor, payload: bytes, path: str
) -> FieldViolation | tuple[pb_descriptor.Descriptor, bytes, str] | None:
    """A length-delimited field: a violation (bad UTF-8), the message it holds, or None (nothing to look at)."""
    if field.type == FD.TYPE_STRING:
        return _utf8(payload, path)
    message = field.message_type
    if field.type != FD.TYPE_MESSAGE or message is None:
        return None
    if not message.GetOptions().map_entry:
        return message, payload, path
    key, value = _map_entry(payload)
    value_field = message.fields_by_name["value"]
    entry_path = _key(path, key)
    if value_field.type == FD.TYPE_STRING:
        return _utf8(value, entry_path)
    if value_field.type != FD.TYPE_MESSAGE or value_field.message_type is None:
        return None
    return value_field.message_type, value, entry_path


def _utf8(payload: bytes, path: str) -> FieldViolation | None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return FieldViolation(path, "is not valid UTF-8")
    return None


def _decodes(descriptor: pb_descriptor.Descriptor, payload: bytes) -> bool:
    try:
        GetMessageClass(descriptor).FromString(payload)
    except Exception:
        return False
    return True


def _map_entry(payload: bytes) -> tuple[str, bytes]:
    key = ""
    value = b""
    for number, wire_type, item in _wire_fields(payload):
        if number == 1 and wire_type == _LENGTH and item is not None:
            key = item.decode("utf-8", "replace")
        elif number == 2 and wire_type == _LENGTH and item is not None:
            value = item
    return key, value


def _wire_depth(descriptor: pb_descriptor.Descriptor, data: bytes) -> int:
    """Message levels below ``descriptor`` in ``data`` (the message itself is 1), without a recursion limit."""
    deepest = 0
    stack: list[tuple[pb_descriptor.Descriptor, bytes, int]] = [(descriptor, data, 1)]
    while stack:
        message, payload, depth = stack.pop()
        deepest = max(deepest, depth)
        for number, wire_type, item in _wire_fields(payload):
            field = message.fields_by_number.get(number)
            if field is None or wire_type != _LENGTH or item is None or field.message_type is None:
                continue
            stack.append((field.message_type, item, depth + 1))
    return deepest


def _wire_fields(data: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """``(field number, wire type, payload of a length-delimited field)`` of one message's encoding."""
    position = 0
    end = len(data)
    while position < end:
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            _, position = _varint(data, position)
            yield number, wire_type, None
        elif wire_type == _FIXED64:
            position += 8
            yield number, wire_type, None
        elif wire_type == _FIXED32:
            position += 4
            yield number, wire_type, None
        elif wire_type == _LENGTH:
            length, position = _varint(data, position)
            if position + length > end:
                raise ValueError("truncated field")
            yield number, wire_type, data[position : position + length]
            position += length
        else:  # groups are not used by this contract
            raise ValueError("unsupported wire type")
        if position > end:
            raise ValueError("truncated field")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")
