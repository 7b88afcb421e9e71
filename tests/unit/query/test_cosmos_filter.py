"""The Cosmos DB predicate/ordering compiler: the shape of its SQL (the emulator run checks its meaning)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from services.platform.docstore.cosmos_filter import (
    Parameters,
    SortValue,
    compare_positions,
    compile_predicate,
    composite_index,
    indexing_policy,
    keyset_after,
    order_by_clause,
    property_ref,
    sort_value_of,
)
from services.platform.query.filter import FieldKind, FieldSpec, FilterSchema, parse_filter
from services.platform.query.predicate import (
    And,
    ArrayContains,
    Compare,
    Exists,
    MapHasKey,
    Not,
    Op,
    Or,
    Predicate,
    Prefix,
    SortKey,
)

NAME = ("name",)


def compiled(predicate: Predicate) -> tuple[str, dict[str, Any]]:
    params = Parameters()
    sql = compile_predicate(predicate, params)
    return sql, {item["name"]: item["value"] for item in params.as_list()}


def paren_depth(sql: str) -> int:
    """Nesting depth of grouping parentheses (function-call parentheses and string literals excluded)."""
    sql = re.sub(r'"[^"]*"', '""', sql)
    sql = re.sub(r"[A-Z_]+\([^()]*\)", "f", sql)
    depth = best = 0
    for ch in sql:
        if ch == "(":
            depth += 1
            best = max(best, depth)
        elif ch == ")":
            depth -= 1
    assert depth == 0, sql
    return best


@pytest.mark.parametrize(
    ("predicate", "sql", "params"),
    [
        (Compare(NAME, Op.EQ, "echo"), 'IS_STRING(c.body["name"]) AND c.body["name"] = @p0', {"@p0": "echo"}),
        (Compare(("n",), Op.GE, 3), 'IS_NUMBER(c.body["n"]) AND c.body["n"] >= @p0', {"@p0": 3}),
        (Compare(("f",), Op.NE, True), 'IS_BOOL(c.body["f"]) AND c.body["f"] = @p0', {"@p0": False}),
        (Prefix(NAME, "ec"), 'IS_STRING(c.body["name"]) AND STARTSWITH(c.body["name"], @p0)', {"@p0": "ec"}),
        (
            ArrayContains(("tags",), "b"),
            'IS_ARRAY(c.body["tags"]) AND ARRAY_CONTAINS(c.body["tags"], @p0)',
            {"@p0": "b"},
        ),
        (MapHasKey(("labels",), "app.k8s.io-name"), 'IS_DEFINED(c.body["labels"]["app.k8s.io-name"])', {}),
        (Exists(("nested", "a")), 'IS_DEFINED(c.body["nested"]["a"])', {}),
        (Not(Exists(NAME)), 'NOT IS_DEFINED(c.body["name"])', {}),
        (
            Not(Compare(NAME, Op.EQ, "x")),
            'NOT (IS_STRING(c.body["name"]) AND c.body["name"] = @p0)',
            {"@p0": "x"},
        ),
        (
            And((Exists(NAME), Or((Exists(("a",)), Exists(("b",)))))),
            'IS_DEFINED(c.body["name"]) AND (IS_DEFINED(c.body["a"]) OR IS_DEFINED(c.body["b"]))',
            {},
        ),
        (
            Or((Compare(NAME, Op.EQ, "x"), Exists(("b",)))),
            '(IS_STRING(c.body["name"]) AND c.body["name"] = @p0 OR IS_DEFINED(c.body["b"]))',
            {"@p0": "x"},
        ),
        (And(()), "true", {}),
        (Or(()), "false", {}),
        (Not(Or(())), "NOT false", {}),
    ],
)
def test_compiled_shape(predicate: Predicate, sql: str, params: dict[str, Any]) -> None:
    assert compiled(predicate) == (sql, params)


HOSTILE = ["' OR 1=1 --", '"]) OR true --', "\\", 'c.body["x"]', "naïve ☃ 🚀", "1; DROP"]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_are_parameters_never_sql_text(value: str) -> None:
    predicate = Or(
        (
            Compare(NAME, Op.EQ, value),
            Prefix(NAME, value),
            ArrayContains(("tags",), value),
            Not(Compare(("labels", "env"), Op.LT, value)),
        )
    )
    sql, params = compiled(predicate)
    assert value not in sql
    assert list(params.values()) == [value] * 4
    assert set(re.findall(r"@p\d+", sql)) == set(params)


@pytest.mark.parametrize("bad", [('a"b',), ("x", "$.y"), ("",), ("a b",), ("a]",), ("0",), ("a\\b",), ()])
def test_unaddressable_paths_are_refused(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="path"):
        compiled(Exists(bad))
    with pytest.raises(ValueError, match="path"):
        order_by_clause((SortKey(bad),))


def test_property_refs_quote_every_segment() -> None:
    assert property_ref(("labels", "app.kubernetes.io-name")) == 'c.body["labels"]["app.kubernetes.io-name"]'
    assert property_ref(("_x", "a@b:c")) == 'c.body["_x"]["a@b:c"]'


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        compiled(Compare(("n",), Op.EQ, float("nan")))
    with pytest.raises(TypeError):
        compiled(Compare(("n",), Op.EQ, None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="booleans"):
        compiled(Compare(("f",), Op.LT, True))


SCHEMA = FilterSchema(
    {
        "name": FieldSpec(NAME, FieldKind.STRING),
        "labels": FieldSpec(("labels",), FieldKind.STRING_MAP),
        "tags": FieldSpec(("tags",), FieldKind.STRING_LIST),
        "n": FieldSpec(("n",), FieldKind.INT),
    }
)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("name = a", 0),
        ("name = a AND n > 1 AND tags:x", 0),
        ("name = a OR n > 1", 1),  # the whole OR is one operand of the caller's AND
        ("labels:env AND NOT labels.env = prod", 1),
        ("-tags:b n >= 3 n < 6", 1),
        ("(name = a OR name = b) AND (n = 1 OR n = 2)", 1),
        ("NOT (name = a OR NOT (n = 1 AND tags:x))", 2),
    ],
)
def test_parentheses_only_where_precedence_needs_them(text: str, depth: int) -> None:
    predicate = parse_filter(text, SCHEMA)
    assert predicate is not None
    assert paren_depth(compiled(predicate)[0]) == depth


def test_order_by_and_its_composite_index() -> None:
    order = (SortKey(("t",), descending=True), SortKey(("labels", "app.k8s-io")))
    assert order_by_clause(order) == (
        'ORDER BY c.body["t"] DESC, c.body["labels"]["app.k8s-io"] ASC, c.id ASC, c.partition ASC'
    )
    assert composite_index(order) == [
        {"path": "/body/t", "order": "descending"},
        {"path": '/body/labels/"app.k8s-io"', "order": "ascending"},
        {"path": "/id", "order": "ascending"},
        {"path": "/partition", "order": "ascending"},
    ]
    assert order_by_clause(()) == "ORDER BY c.id ASC, c.partition ASC"


def test_indexing_policy_declares_each_order_once() -> None:
    t = (SortKey(("t",)),)
    policy = indexing_policy([t, t, ()])
    assert policy["includedPaths"] == [{"path": "/*"}]
    assert policy["compositeIndexes"] == [composite_index(()), composite_index(t)]


def test_keyset_is_one_flat_disjunction_with_values_as_parameters() -> None:
    params = Parameters()
    order = (SortKey(("t",)), SortKey(("n",), descending=True))
    sql = keyset_after(order, [SortValue("s", "2026-01-01"), SortValue("n", 3)], "d'1", 'p"1', params)
    values = {item["name"]: item["value"] for item in params.as_list()}
    assert values == {"@p0": "2026-01-01", "@p1": "2026-01-01", "@p2": 3, "@p3": 3, "@p4": "d'1", "@p5": 'p"1'}
    assert "2026" not in sql
    assert "d'1" not in sql
    assert paren_depth(sql) == 1
    alternatives = sql[1:-1].split(" OR ")
    # after "2026-01-01" ascending: a greater string, then arrays and objects (Cosmos DB's type order)
    assert alternatives[0] == 'c.body["t"] > @p0'
    assert alternatives[1:3] == ['IS_ARRAY(c.body["t"])', 'IS_OBJECT(c.body["t"])']
    # equal first key, then n below 3 (descending): smaller numbers, then booleans, null, missing
    assert alternatives[3] == 'c.body["t"] = @p1 AND c.body["n"] < @p2'
    assert alternatives[4:7] == [
        'c.body["t"] = @p1 AND IS_BOOL(c.body["n"])',
        'c.body["t"] = @p1 AND IS_NULL(c.body["n"])',
        'c.body["t"] = @p1 AND NOT IS_DEFINED(c.body["n"])',
    ]
    assert alternatives[7:] == [
        'c.body["t"] = @p1 AND c.body["n"] = @p3 AND c.id > @p4',
        'c.body["t"] = @p1 AND c.body["n"] = @p3 AND c.id = @p4 AND c.partition > @p5',
    ]


@pytest.mark.parametrize(
    ("value", "descending", "want"),
    [
        (SortValue("u"), False, ['IS_DEFINED(c.body["k"])']),
        (SortValue("u"), True, []),
        (SortValue("z"), True, ['NOT IS_DEFINED(c.body["k"])']),
        (SortValue("b", False), False, ['c.body["k"] = @p0', 'IS_NUMBER(c.body["k"])']),
        (SortValue("b", True), False, ['IS_NUMBER(c.body["k"])']),
        (SortValue("b", True), True, ['c.body["k"] = @p0', 'IS_NULL(c.body["k"])']),
    ],
)
def test_keyset_follows_the_type_order(value: SortValue, descending: bool, want: list[str]) -> None:
    params = Parameters()
    sql = keyset_after((SortKey(("k",), descending),), [value], "i", "p", params)
    alternatives = sql[1:-1].split(" OR ")
    got = [a for a in alternatives if "c.id" not in a]
    assert got[: len(want)] == want
    if value.kind == "b" and want and want[0].endswith("@p0"):
        assert params.as_list()[0]["value"] is (not descending)


def test_sort_values_are_typed_and_round_trip() -> None:
    body = {"s": "x", "n": 2.5, "b": False, "z": None, "o": {"k": "v"}, "a": [1]}
    assert sort_value_of(body, ("s",)) == SortValue("s", "x")
    assert sort_value_of(body, ("n",)) == SortValue("n", 2.5)
    assert sort_value_of(body, ("b",)) == SortValue("b", False)
    assert sort_value_of(body, ("z",)) == SortValue("z")
    assert sort_value_of(body, ("missing",)) == SortValue("u")
    assert sort_value_of(body, ("s", "deeper")) == SortValue("u")
    assert sort_value_of(body, ("o", "k")) == SortValue("s", "v")
    for path in [("o",), ("a",)]:
        with pytest.raises(ValueError, match="array or an object"):
            sort_value_of(body, path)
    for value in [SortValue("s", "x"), SortValue("n", 3), SortValue("b", True), SortValue("z"), SortValue("u")]:
        assert SortValue.from_json(value.to_json()) == value


@pytest.mark.parametrize(
    "raw", [["s", 1], ["n", "1"], ["n", True], ["b", 1], ["z", 0], ["u", "x"], ["a", []], ["s"], "s", ["n", 2**70]]
)
def test_malformed_sort_values_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="malformed"):
        SortValue.from_json(raw)


def test_rows_compare_in_cosmos_type_order_then_id_then_partition() -> None:
    ascending, descending = (SortKey(("k",)),), (SortKey(("k",), descending=True),)
    ladder = [
        SortValue("u"),
        SortValue("z"),
        SortValue("b", False),
        SortValue("b", True),
        SortValue("n", -1),
        SortValue("n", 2.5),
        SortValue("s", ""),
        SortValue("s", "a"),
    ]
    for low, high in itertools.pairwise(ladder):
        assert compare_positions(ascending, ([low], "i", "p"), ([high], "i", "p")) == -1
        assert compare_positions(descending, ([low], "i", "p"), ([high], "i", "p")) == 1
    same = [SortValue("n", 1)]
    assert compare_positions(ascending, (same, "a", "p2"), (same, "b", "p1")) == -1
    assert compare_positions(descending, (same, "a", "p2"), (same, "a", "p1")) == 1
    assert compare_positions(ascending, (same, "a", "p"), (same, "a", "p")) == 0
