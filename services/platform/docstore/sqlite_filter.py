"""The one predicate/ordering compiler for the SQLite document store.

Every value travels as a bound parameter. A JSON path is written into the SQL as a string literal
(``json_extract(body, '$."labels"."env"')``), after :func:`~services.platform.docstore.codec.check_path` has
validated it segment by segment (no quote can appear in one, so a literal cannot be broken out of): only then can
SQLite match an index on that expression (:func:`index_columns`, the one place such an index is spelled). Every
fragment evaluates to 0 or 1, never NULL, so ``NOT`` is an exact complement (see
:mod:`services.platform.query.predicate` for the semantics).

Ordering uses ``json_extract(body, '<path>')`` per key, then ``id`` and ``partition`` as tie breakers. SQLite
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

__all__ = [
    "SortValue",
    "compile_predicate",
    "index_columns",
    "json_path",
    "keyset_after",
    "order_by_clause",
    "path_literal",
    "value_of",
]

_SQL_OPS = {Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}
_NUMBER_TYPES = "('integer', 'real')"


def json_path(path: Path) -> str:
    """``("labels", "env")`` → ``$."labels"."env"``; refuses segments SQLite cannot quote safely."""
    check_path(path)
    return "$" + "".join(f'."{segment}"' for segment in path)


def path_literal(path: Path) -> str:
    """The SQL string literal of a validated path: ``'$."labels"."env"'`` (segments hold no quote of any kind)."""
    text = json_path(path)
    if "'" in text:  # unreachable after check_path; the literal's safety must not rest on a regex alone
        raise ValueError(f"unsupported document path {path!r}")
    return f"'{text}'"


def value_of(path: Path) -> str:
    """``json_extract(body, '<path>')``: the SQL value at ``path``, spelled as the indexes spell it."""
    return f"json_extract(body, {path_literal(path)})"


def _type_of(path: Path) -> str:
    return f"IFNULL(json_type(body, {path_literal(path)}), '')"


def index_columns(order: Sequence[SortKey]) -> str:
    """The column list of the index that serves ``order`` (see :func:`order_by_clause`) and the filters on its
    first key: ``collection, json_extract(body, '<k0>') [DESC], …, id, partition`` (the collection first: a query
    states it, so the index seeks on it and one more key, which SQLite prefers to any index of the collection
    alone)."""
    columns = ["collection"]
    columns.extend(f"{value_of(key.path)}{' DESC' if key.descending else ''}" for key in order)
    columns.extend(["id", "partition"])
    return ", ".join(columns)


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
        params.extend([len(p.prefix), p.prefix])
        return f"({_type_of(p.path)} = 'text' AND substr({value_of(p.path)}, 1, ?) = ?)"
    if isinstance(p, ArrayContains):
        _check_value(p.value)
        literal = path_literal(p.path)
        head = f"({_type_of(p.path)} = 'array' AND EXISTS (SELECT 1 FROM json_each(body, {literal}) AS e WHERE "
        if isinstance(p.value, bool):
            params.append("true" if p.value else "false")
            return head + "e.type = ?))"
        params.append(p.value)
        element_type = "e.type = 'text'" if isinstance(p.value, str) else f"e.type IN {_NUMBER_TYPES}"
        return head + element_type + " AND e.value = ?))"
    if isinstance(p, MapHasKey):
        return f"(json_type(body, {path_literal((*p.path, p.key))}) IS NOT NULL)"
    if isinstance(p, Exists):
        return f"(json_type(body, {path_literal(p.path)}) IS NOT NULL)"
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
    if isinstance(p.value, bool):
        if p.op not in (Op.EQ, Op.NE):
            raise ValueError(f"booleans support only = and != (got {p.op.value})")
        wanted = p.value if p.op is Op.EQ else not p.value
        # json_extract gives 1/0 for true/false: that term lets an index on the path serve the test, the type
        # test keeps the numbers 1 and 0 out (NULL AND 0 is 0: the fragment stays 0/1)
        params.extend([1 if wanted else 0, "true" if wanted else "false"])
        return f"({value_of(p.path)} = ? AND {_type_of(p.path)} = ?)"
    params.append(p.value)
    guard = "= 'text'" if isinstance(p.value, str) else f"IN {_NUMBER_TYPES}"
    return f"({_type_of(p.path)} {guard} AND {value_of(p.path)} {_SQL_OPS[p.op]} ?)"


def order_by_clause(order_by: Sequence[SortKey]) -> tuple[list[str], list[Any], str]:
    """Select expressions ``k0…`` (with their params) and the ORDER BY clause over them, id, partition."""
    selects: list[str] = []
    params: list[Any] = []
    terms: list[str] = []
    for i, key in enumerate(order_by):
        selects.append(f"{value_of(key.path)} AS k{i}")
        terms.append(f"k{i} {'DESC' if key.descending else 'ASC'}")
    terms.extend(["id ASC", "partition ASC"])
    return selects, params, "ORDER BY " + ", ".join(terms)


def keyset_after(
    order_by: Sequence[SortKey], values: Sequence[SortValue], id: str, partition: str
) -> tuple[str, list[Any]]:
    """Rows strictly after ``(values, id, partition)`` in the order of :func:`order_by_clause`.

    When every alternative bounds the first key the same way (ascending from a value, or descending past the
    NULLs) that bound is stated once more in front, so an index on the first key starts the page where it
    continues instead of from the beginning (it changes no result)."""
    if len(values) != len(order_by):
        raise ValueError("keyset values do not match the sort keys")
    params: list[Any] = []
    alternatives: list[str] = []
    equal_prefix: list[str] = []
    equal_params: list[Any] = []
    for key, value in zip(order_by, values, strict=True):
        x = value_of(key.path)
        after_params: list[Any]
        if not key.descending:
            if value is None:
                after, after_params = f"{x} IS NOT NULL", []
            else:
                after, after_params = f"{x} > ?", [value]
        elif value is None:
            after, after_params = "0", []
        else:
            after, after_params = f"({x} < ? OR {x} IS NULL)", [value]
        alternatives.append("(" + " AND ".join([*equal_prefix, after]) + ")")
        params.extend(equal_params)
        params.extend(after_params)
        equal_prefix.append(f"{x} IS ?")
        equal_params.append(value)
    alternatives.append("(" + " AND ".join([*equal_prefix, "(id > ? OR (id = ? AND partition > ?))"]) + ")")
    params.extend(equal_params)
    params.extend([id, id, partition])
    disjunction = "(" + " OR ".join(alternatives) + ")"
    if order_by:
        first, x = values[0], value_of(order_by[0].path)
        if not order_by[0].descending and first is not None:
            return f"({x} >= ? AND {disjunction})", [first, *params]
        if order_by[0].descending and first is None:
            return f"({x} IS NULL AND {disjunction})", params
    return disjunction, params
