"""Query language: the predicate tree, the AIP-160 filter parser and AIP-132 ``order_by``."""

from services.platform.query.filter import FieldKind, FieldSpec, FilterSchema, parse_filter, parse_order_by
from services.platform.query.predicate import (
    And,
    ArrayContains,
    Compare,
    Exists,
    MapHasKey,
    Not,
    Op,
    Or,
    Path,
    Predicate,
    Prefix,
    Scalar,
    SortKey,
)

__all__ = [
    "And",
    "ArrayContains",
    "Compare",
    "Exists",
    "FieldKind",
    "FieldSpec",
    "FilterSchema",
    "MapHasKey",
    "Not",
    "Op",
    "Or",
    "Path",
    "Predicate",
    "Prefix",
    "Scalar",
    "SortKey",
    "parse_filter",
    "parse_order_by",
]
