"""JSON ↔ ``google.protobuf.Struct`` helpers.

A Struct stores every number as a double, so ``{"failWith": 404}`` comes back from ``MessageToDict`` as
``404.0``. JSON itself has one number type; extensions written in typed languages expect ``404``. The agent
therefore writes integral doubles within the exactly representable range (±2^53) as integers — the rule of
the extension contract, :func:`exthub.contract.extension_request.json_integers`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from exthub.contract.extension_request import MAX_SAFE_INTEGER, json_integers

__all__ = ["MAX_SAFE_INTEGER", "json_integers", "struct_from_json"]


def struct_from_json(value: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct holding the JSON object ``value`` (raises ValueError/TypeError if it cannot)."""
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct
