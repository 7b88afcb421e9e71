"""``google.protobuf.Struct`` as plain JSON values, the way ``json_format.MessageToDict`` gives them, without its
generic printer (which walks descriptors and is about ten times slower on the small structs of every call).

The same result for every ``Struct``: objects as dicts (in the Struct's map order), lists, strings, booleans,
``None`` for ``null_value`` and for a ``Value`` with no kind set, every number as the ``float`` the Struct holds;
an infinite or NaN number is a ``ValueError`` (JSON has neither).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

__all__ = ["struct_to_dict"]


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """``struct`` as a dict of plain JSON values (equal to ``json_format.MessageToDict(struct)``)."""
    fields = struct.fields
    return {key: _value(fields[key]) for key in fields}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number):
            raise ValueError("Fail to serialize Infinity for Value.number_value, which would parse as string_value")
        if math.isnan(number):
            raise ValueError("Fail to serialize NaN for Value.number_value, which would parse as string_value")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or no kind set
