"""JSON ↔ ``google.protobuf.Struct`` helpers.

A Struct stores every number as a double, so ``{"failWith": 404}`` comes back from ``MessageToDict`` as
``404.0``. JSON itself has one number type; extensions written in typed languages expect ``404``. The agent
therefore writes integral doubles within the exactly representable range (±2^53) as integers.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

__all__ = ["MAX_SAFE_INTEGER", "json_integers", "struct_from_json"]

MAX_SAFE_INTEGER = 2**53


def json_integers(value: Any) -> Any:
    """``value`` with every integral float (|x| ≤ 2^53) replaced by an int, at any depth."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, dict):
        return {key: json_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_integers(item) for item in value]
    return value


def struct_from_json(value: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct holding the JSON object ``value`` (raises ValueError/TypeError if it cannot)."""
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct
