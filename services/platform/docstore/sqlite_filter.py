"""The one predicate/ordering compiler for the SQLite document store.

Everything user-controlled travels as a bound parameter, including JSON paths (``$."labels"."env"``,
validated segment by segment). Every fragment evaluates to 0 or 1, never NULL, so ``NOT`` is an
exact complement (see :mod:`services.platform.query.predicate` for the semantics).

Ordering uses ``json_extract(body, ?)`` per key, then ``id`` and ``partition`` as tie breakers. SQLite
orders NULL (missing) < numbers < text, NULLs first ascending and last descending; the keyset
condition built by :func:`keyset_after` follows exactly that order, so pages never skip or repeat rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from services.platform.docstore.codec import SortValue, check_path
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

__all__ = ["SortValue", "compile_predicate", "json_path", "keyset_after", "order_by_clause"]

_SQL_OPS = {Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}
_NUMBER_TYPES = "('integer', 'real')"


def json_path(path: Path) -> str:
    """``("labels", "env")`` → ``$."labels"."env"``; refuses segments SQLite cannot quote safely."""
    check_path(path)
    return "$" + "".join(f'."{segment}"' for segment in path)


def _check_value(value: Scalar) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite numbers cannot be compared")
    if not isinstance(value, str | int | float):
        raise TypeError(f"unsupported filter value {value!r}")


def compile_predicate(predicate: Predicate) -> tuple[str, list[Any]]:
    """Compile a predicate to a SQL boolean expression over the ``body`` column and its parameters."""
    params: list[Any] = []
    sql = _compile(predicate, params)
    return sql, params


def _compile(p: Predicate, params: list[Any]) -> str:
    if isinstance(p, Compare):
        return _compare(p, params)
    if isinstance(p, Prefix):
        if not isinstance(p.prefix, str):
            raise TypeError("Prefix.prefix must be a string")
        path = json_path(p.path)
        params.extend([path, path, len(p.prefix), p.prefix])
        return "(IFNULL(json_type(body, ?), '') = 'text' AND substr(json_extract(body, ?), 1, ?) = ?)"
    if isinstance(p, ArrayContains):
        _check_value(p.value)
        path = json_path(p.path)
        params.extend([path, path])
        head = "(IFNULL(json_type(body, ?), '') = 'array' AND EXISTS (SELECT 1 FROM json_each(body, ?) AS e WHERE "
        if isinstance(p.value, bool):
            params.append("true" if p.value else "false")
            return head + "e.type = ?))"
        params.append(p.value)
        element_type = "e.type = 'text'" if isinstance(p.value, str) else f"e.type IN {_NUMBER_TYPES}"
        return head + element_type + " AND e.value = ?))"
    if isinstance(p, MapHasKey):
        params.append(json_path((*p.path, p.key)))
        return "(json_type(body, ?) IS NOT NULL)"
    if isinstance(p, Exists):
        params.append(json_path(p.path))
        return "(json_type(body, ?) IS NOT NULL)"
    if isinstance(p, And):
        if not p.items:
            return "1"
        return "(" + " AND ".join(_compile(item, params) for item in p.items) + ")"
    if isinstance(p, Or):
        if not p.items:
            return "0"
        return "(" + " OR ".join(_compile(item, params) for item in p.items) + ")"
    if isinstance(p, Not):
        return "(NOT " + _compile(p.item, params) + ")"
    raise TypeError(f"unknown predicate {p!r}")


def _compare(p: Compare, params: list[Any]) -> str:
    _check_value(p.value)
    path = json_path(p.path)
    if isinstance(p.value, bool):
        if p.op not in (Op.EQ, Op.NE):
            raise ValueError(f"booleans support only = and != (got {p.op.value})")
        wanted = p.value if p.op is Op.EQ else not p.value
        params.extend([path, "true" if wanted else "false"])
        return "(IFNULL(json_type(body, ?), '') = ?)"
    params.extend([path, path, p.value])
    guard = "= 'text'" if isinstance(p.value, str) else f"IN {_NUMBER_TYPES}"
    return f"(IFNULL(json_type(body, ?), '') {guard} AND json_extract(body, ?) {_SQL_OPS[p.op]} ?)"


def order_by_clause(order_by: Sequence[SortKey]) -> tuple[list[str], list[Any], str]:
    """Select expressions ``k0…`` (with their params) and the ORDER BY clause over them, id, partition."""
    selects: list[str] = []
    params: list[Any] = []
    terms: list[str] = []
    for i, key in enumerate(order_by):
        selects.append(f"json_extract(body, ?) AS k{i}")
        params.append(json_path(key.path))
        terms.append(f"k{i} {'DESC' if key.descending else 'ASC'}")
    terms.extend(["id ASC", "partition ASC"])
    return selects, params, "ORDER BY " + ", ".join(terms)


def keyset_after(
    order_by: Sequence[SortKey], values: Sequence[SortValue], id: str, partition: str
) -> tuple[str, list[Any]]:
    """Rows strictly after ``(values, id, partition)`` in the order of :func:`order_by_clause`."""
    if len(values) != len(order_by):
        raise ValueError("keyset values do not match the sort keys")
    params: list[Any] = []
    alternatives: list[str] = []
    equal_prefix: list[str] = []
    equal_params: list[Any] = []
    for key, value in zip(order_by, values, strict=True):
        path = json_path(key.path)
        after_params: list[Any]
        if not key.descending:
            if value is None:
                after, after_params = "json_extract(body, ?) IS NOT NULL", [path]
            else:
                after, after_params = "json_extract(body, ?) > ?", [path, value]
        elif value is None:
            after, after_params = "0", []
        else:
            after, after_params = (
                "(json_extract(body, ?) < ? OR json_extract(body, ?) IS NULL)",
                [
                    path,
                    value,
                    path,
                ],
            )
        alternatives.append("(" + " AND ".join([*equal_prefix, after]) + ")")
        params.extend(equal_params)
        params.extend(after_params)
        equal_prefix.append("json_extract(body, ?) IS ?")
        equal_params.extend([path, value])
    alternatives.append("(" + " AND ".join([*equal_prefix, "(id > ? OR (id = ? AND partition > ?))"]) + ")")
    params.extend(equal_params)
    params.extend([id, id, partition])
    return "(" + " OR ".join(alternatives) + ")", params
