"""The one predicate/ordering compiler for the Cosmos DB document store.

Items are ``{"id", "partition", "body"}``; every document path is addressed under ``c.body`` with bracket
notation (``("labels", "env")`` → ``c.body["labels"]["env"]``). Path segments come only from the predicate
tree and are checked against a strict pattern (no quote, backslash or leading digit can appear), so they can
be quoted as string literals; every value travels as a query parameter (``@p0``, ``@p1``, …).

Cosmos DB SQL has a third truth value (``undefined``: a missing property, or a comparison between different
types). Every fragment here is guarded so it evaluates to true or false only — a comparison holds only when
the property has the value's JSON type — which makes ``NOT`` an exact complement, as the predicate semantics
require (see :mod:`services.platform.query.predicate`).

Ordering is ``ORDER BY`` on the sort keys, then ``c.id`` and ``c.partition``. Cosmos DB orders values of
different types as undefined (missing) < null < booleans < numbers < strings < arrays < objects; the keyset
condition built by :func:`keyset_after` follows exactly that order. A query that orders by more than one
property needs a composite index with the same paths and directions (:func:`composite_index`); the
container's indexing policy is :func:`indexing_policy`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    "DOCUMENT",
    "Parameters",
    "Position",
    "SortValue",
    "compare_positions",
    "compile_predicate",
    "composite_index",
    "indexing_policy",
    "keyset_after",
    "order_by_clause",
    "property_ref",
    "sort_value_of",
]

DOCUMENT = "c.body"
_SEGMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-@:]{0,254}")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_OPS = {Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}

# Cosmos DB's order of JSON types in ORDER BY, lowest first, and the SQL type test of each.
_UNDEFINED, _NULL, _BOOL, _NUMBER, _STRING, _ARRAY, _OBJECT = "u", "z", "b", "n", "s", "a", "o"
_TYPE_ORDER = (_UNDEFINED, _NULL, _BOOL, _NUMBER, _STRING, _ARRAY, _OBJECT)
_TYPE_TEST = {
    _UNDEFINED: "NOT IS_DEFINED({x})",
    _NULL: "IS_NULL({x})",
    _BOOL: "IS_BOOL({x})",
    _NUMBER: "IS_NUMBER({x})",
    _STRING: "IS_STRING({x})",
    _ARRAY: "IS_ARRAY({x})",
    _OBJECT: "IS_OBJECT({x})",
}


@dataclass(frozen=True)
class SortValue:
    """A sort key's value in the last row of a page: its JSON type tag and (for scalars) the value."""

    kind: str
    value: bool | int | float | str | None = None

    def to_json(self) -> list[Any]:
        """``[kind, value]`` for the continuation token."""
        return [self.kind, self.value]

    @classmethod
    def from_json(cls, raw: object) -> SortValue:
        """The inverse of :meth:`to_json`; ValueError for anything malformed."""
        if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str):
            raise ValueError("malformed sort value")
        kind, value = raw
        valid = {
            _UNDEFINED: value is None,
            _NULL: value is None,
            _BOOL: isinstance(value, bool),
            _NUMBER: isinstance(value, int | float) and not isinstance(value, bool) and _finite(value),
            _STRING: isinstance(value, str),
        }
        if not valid.get(kind, False):
            raise ValueError("malformed sort value")
        return cls(kind, value)


def _finite(value: int | float) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return -(2**63) <= value < 2**63


class Parameters:
    """Collects query parameters and hands out their names (``@p0``, ``@p1``, …)."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []

    def add(self, value: Any) -> str:
        """Bind ``value``; returns its parameter name."""
        name = f"@p{len(self._items)}"
        self._items.append({"name": name, "value": value})
        return name

    def as_list(self) -> list[dict[str, Any]]:
        """The ``parameters`` argument of a Cosmos DB query."""
        return [dict(item) for item in self._items]


def _check_segment(segment: str) -> str:
    if not isinstance(segment, str) or not _SEGMENT_RE.fullmatch(segment):
        raise ValueError(f"unsupported document path segment {segment!r}")
    return segment


def property_ref(path: Path) -> str:
    """``("labels", "env")`` → ``c.body["labels"]["env"]``; refuses segments that cannot be quoted safely."""
    if not path:
        raise ValueError("empty document path")
    return DOCUMENT + "".join(f'["{_check_segment(segment)}"]' for segment in path)


def _check_value(value: Scalar) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite numbers cannot be compared")
    if not isinstance(value, str | int | float):
        raise TypeError(f"unsupported filter value {value!r}")


_ATOM, _AND, _OR = 0, 1, 2  # how loosely an SQL fragment binds: a call or NOT x, an AND chain, an OR chain


def compile_predicate(predicate: Predicate, params: Parameters) -> str:
    """Compile a predicate to a Cosmos DB SQL condition on ``c`` (true or false, never undefined), ready to be
    one operand of ``AND``.

    Parentheses are written only where precedence needs them (``NOT`` binds tighter than ``AND``, which binds
    tighter than ``OR``): the emulator's parser takes exponential time in the nesting depth of parentheses.
    """
    text, level = _compile(predicate, params)
    return f"({text})" if level == _OR else text


def _compile(p: Predicate, params: Parameters) -> tuple[str, int]:
    if isinstance(p, Compare):
        return _compare(p, params), _AND
    if isinstance(p, Prefix):
        if not isinstance(p.prefix, str):
            raise TypeError("Prefix.prefix must be a string")
        x = property_ref(p.path)
        return f"IS_STRING({x}) AND STARTSWITH({x}, {params.add(p.prefix)})", _AND
    if isinstance(p, ArrayContains):
        _check_value(p.value)
        x = property_ref(p.path)
        return f"IS_ARRAY({x}) AND ARRAY_CONTAINS({x}, {params.add(p.value)})", _AND
    if isinstance(p, MapHasKey):
        return f"IS_DEFINED({property_ref((*p.path, p.key))})", _ATOM
    if isinstance(p, Exists):
        return f"IS_DEFINED({property_ref(p.path)})", _ATOM
    if isinstance(p, And):
        if not p.items:
            return "true", _ATOM
        parts = [_compile(item, params) for item in p.items]
        if len(parts) == 1:
            return parts[0]
        return " AND ".join(f"({text})" if level == _OR else text for text, level in parts), _AND
    if isinstance(p, Or):
        if not p.items:
            return "false", _ATOM
        parts = [_compile(item, params) for item in p.items]
        if len(parts) == 1:
            return parts[0]
        return " OR ".join(text for text, _ in parts), _OR
    if isinstance(p, Not):
        text, level = _compile(p.item, params)
        return (f"NOT {text}" if level == _ATOM else f"NOT ({text})"), _ATOM
    raise TypeError(f"unknown predicate {p!r}")


def _compare(p: Compare, params: Parameters) -> str:
    _check_value(p.value)
    x = property_ref(p.path)
    if isinstance(p.value, bool):
        if p.op not in (Op.EQ, Op.NE):
            raise ValueError(f"booleans support only = and != (got {p.op.value})")
        wanted = p.value if p.op is Op.EQ else not p.value
        return f"IS_BOOL({x}) AND {x} = {params.add(wanted)}"
    guard = "IS_STRING" if isinstance(p.value, str) else "IS_NUMBER"
    return f"{guard}({x}) AND {x} {_SQL_OPS[p.op]} {params.add(p.value)}"


def order_by_clause(order_by: Sequence[SortKey]) -> str:
    """``ORDER BY`` the sort keys, then ``c.id`` and ``c.partition`` (ascending) as tie breakers."""
    terms = [f"{property_ref(key.path)} {'DESC' if key.descending else 'ASC'}" for key in order_by]
    terms.extend(["c.id ASC", "c.partition ASC"])
    return "ORDER BY " + ", ".join(terms)


def _index_path(path: Path) -> str:
    parts = [s if _IDENTIFIER_RE.fullmatch(_check_segment(s)) else f'"{s}"' for s in path]
    return "/body/" + "/".join(parts)


def composite_index(order_by: Sequence[SortKey]) -> list[dict[str, str]]:
    """The composite index that serves :func:`order_by_clause` for ``order_by`` (Cosmos DB indexing policy)."""
    index = [
        {"path": _index_path(key.path), "order": "descending" if key.descending else "ascending"} for key in order_by
    ]
    index.extend([{"path": "/id", "order": "ascending"}, {"path": "/partition", "order": "ascending"}])
    return index


def indexing_policy(sort_orders: Iterable[Sequence[SortKey]]) -> dict[str, Any]:
    """A container's indexing policy: every path range-indexed (the default) plus one composite index per
    sort order (the order without keys, ``id`` then ``partition``, is always included)."""
    composites: list[list[dict[str, str]]] = []
    for order in [(), *sort_orders]:
        index = composite_index(tuple(order))
        if index not in composites:
            composites.append(index)
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": '/"_etag"/?'}],
        "compositeIndexes": composites,
    }


def sort_value_of(body: Mapping[str, Any], path: Path) -> SortValue:
    """The value at ``path`` in a returned body, typed as Cosmos DB orders it.

    Raises ValueError for arrays and objects: documents are only ordered by scalar (or missing) fields.
    """
    current: Any = body
    for segment in path:
        if not isinstance(current, Mapping) or segment not in current:
            return SortValue(_UNDEFINED)
        current = current[segment]
    if current is None:
        return SortValue(_NULL)
    if isinstance(current, bool):
        return SortValue(_BOOL, current)
    if isinstance(current, int | float):
        return SortValue(_NUMBER, current)
    if isinstance(current, str):
        return SortValue(_STRING, current)
    raise ValueError(f"cannot page by {'.'.join(path)}: it holds an array or an object in a document")


def _equal(x: str, value: SortValue, params: Parameters) -> str:
    if value.kind in (_UNDEFINED, _NULL):
        return _TYPE_TEST[value.kind].format(x=x)
    return f"{x} = {params.add(value.value)}"


def _beyond(x: str, key: SortKey, value: SortValue, params: Parameters) -> list[str]:
    """Conditions (any of them) for ``x`` to sort strictly after ``value`` in ``key``'s direction."""
    rank = _TYPE_ORDER.index(value.kind)
    later = _TYPE_ORDER[rank + 1 :] if not key.descending else tuple(reversed(_TYPE_ORDER[:rank]))
    terms: list[str] = []
    if value.kind == _BOOL:
        if value.value is key.descending:  # false < true: after false (ascending) / before true (descending)
            terms.append(f"{x} = {params.add(not key.descending)}")
    elif value.kind in (_NUMBER, _STRING):
        terms.append(f"{x} {'<' if key.descending else '>'} {params.add(value.value)}")
    if not key.descending and value.kind == _UNDEFINED:
        return [*terms, f"IS_DEFINED({x})"]
    return terms + [_TYPE_TEST[kind].format(x=x) for kind in later]


def keyset_after(
    order_by: Sequence[SortKey], values: Sequence[SortValue], id: str, partition: str, params: Parameters
) -> str:
    """Rows strictly after ``(values, id, partition)`` in the order of :func:`order_by_clause`, as one
    parenthesised disjunction of conjunctions (no deeper nesting), ready to be one operand of ``AND``."""
    if len(values) != len(order_by):
        raise ValueError("keyset values do not match the sort keys")
    alternatives: list[str] = []
    equal_prefix: list[str] = []
    for key, value in zip(order_by, values, strict=True):
        x = property_ref(key.path)
        alternatives.extend(" AND ".join([*equal_prefix, term]) for term in _beyond(x, key, value, params))
        equal_prefix.append(_equal(x, value, params))
    last_id = params.add(id)
    tails = [f"c.id > {last_id}", f"c.id = {last_id} AND c.partition > {params.add(partition)}"]
    alternatives.extend(" AND ".join([*equal_prefix, tail]) for tail in tails)
    return "(" + " OR ".join(alternatives) + ")"


Position = tuple[Sequence[SortValue], str, str]
"""A row's place in an order: its sort values, id and partition."""


def compare_positions(order_by: Sequence[SortKey], a: Position, b: Position) -> int:
    """-1, 0 or 1: how :func:`order_by_clause` orders two rows given as ``(sort values, id, partition)``
    (the same order :func:`keyset_after` continues)."""
    for key, x, y in zip(order_by, a[0], b[0], strict=True):
        found = _compare_values(x, y)
        if found:
            return -found if key.descending else found
    return (a[1:] > b[1:]) - (a[1:] < b[1:])


def _compare_values(x: SortValue, y: SortValue) -> int:
    rank_x, rank_y = _TYPE_ORDER.index(x.kind), _TYPE_ORDER.index(y.kind)
    if rank_x != rank_y:
        return -1 if rank_x < rank_y else 1
    a, b = x.value, y.value
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if isinstance(a, int | float) and isinstance(b, int | float):  # numbers, or two booleans
        return (a > b) - (a < b)
    return 0  # undefined or null: one value each
