"""Contract: predicates, ordering, keyset paging, count — checked against a reference evaluator."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest

from services.platform.docstore.port import Document, DocumentCollection, Query
from services.platform.errors import InvalidArgument
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


def ts(day: int) -> str:
    return f"2026-01-{day:02d}T12:00:00.000000Z"


DOCS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "p1",
        "d01",
        {
            "name": "echo",
            "n": 1,
            "t": ts(1),
            "tags": ["a", "b"],
            "labels": {"env": "prod", "team": "x"},
            "flag": True,
            "nested": {"a": {"b": "deep"}},
        },
    ),
    ("p1", "d02", {"name": "echo-2", "n": 2, "t": ts(2), "tags": ["b"], "labels": {"env": "dev"}, "flag": False}),
    ("p1", "d03", {"name": "ech%o", "n": 3, "t": ts(3), "tags": [], "labels": {}}),
    ("p1", "d04", {"name": "ech_o", "n": 3, "t": ts(4)}),
    ("p2", "d05", {"name": "Echo", "n": 5, "t": ts(5), "labels": {"env": "prod"}}),
    (
        "p2",
        "d06",
        {"name": "zulu", "n": -1, "t": ts(6), "tags": ["c", "%"], "labels": {"app.kubernetes.io-name": "web"}},
    ),
    ("p2", "d07", {"name": 'it\'s "quoted"', "n": 7, "labels": {"env": 'it\'s "quoted"'}}),
    ("p2", "d08", {"name": None, "n": None}),
    ("p2", "d01", {"name": "dup-id", "n": 1, "tags": ["b"]}),
    ("p1", "d09", {"name": "' OR 1=1 --", "n": 2.5, "tags": ['"); DROP TABLE documents; --']}),
    ("p1", "d10", {"name": "naïve ☃ 日本", "n": 3, "labels": {"env": "prod"}, "flag": "true"}),
    ("p2", "d11", {"name": "1", "n": "3", "t": "not-a-time", "tags": "b", "labels": ["env"]}),
]

MISSING = object()


def _get(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = body
    for seg in path:
        if not isinstance(cur, dict) or seg not in cur:
            return MISSING
        cur = cur[seg]
    return cur


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(b, str):
        return isinstance(a, str)
    return isinstance(a, int | float)


_PY_OPS: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def matches(body: dict[str, Any], p: Predicate) -> bool:
    """The documented two-valued semantics (services.platform.query.predicate), in Python."""
    if isinstance(p, Compare):
        v = _get(body, p.path)
        return v is not MISSING and v is not None and _same_kind(v, p.value) and _PY_OPS[p.op](v, p.value)
    if isinstance(p, Prefix):
        v = _get(body, p.path)
        return isinstance(v, str) and v.startswith(p.prefix)
    if isinstance(p, ArrayContains):
        v = _get(body, p.path)
        return isinstance(v, list) and any(_same_kind(e, p.value) and e == p.value for e in v)
    if isinstance(p, MapHasKey):
        v = _get(body, p.path)
        return isinstance(v, dict) and p.key in v
    if isinstance(p, Exists):
        return _get(body, p.path) is not MISSING
    if isinstance(p, And):
        return all(matches(body, i) for i in p.items)
    if isinstance(p, Or):
        return any(matches(body, i) for i in p.items)
    assert isinstance(p, Not)
    return not matches(body, p.item)


@pytest.fixture
async def loaded(collection: DocumentCollection) -> DocumentCollection:
    for partition, doc_id, body in DOCS:
        await collection.create(partition, doc_id, body)
    return collection


async def all_pages(collection: DocumentCollection, query: Query) -> list[Document]:
    out: list[Document] = []
    continuation = query.continuation
    for _ in range(100):
        page = await collection.query(Query(query.partition, query.where, query.order_by, query.limit, continuation))
        assert len(page.documents) <= query.limit
        out.extend(page.documents)
        continuation = page.continuation
        if continuation is None:
            return out
        assert page.documents, "a non-final page must not be empty"
    raise AssertionError("too many pages")


def keys(docs: list[Document]) -> list[tuple[str, str]]:
    return [(d.partition, d.id) for d in docs]


def expected(p: Predicate | None, partition: str | None = None) -> set[tuple[str, str]]:
    return {
        (part, i)
        for part, i, body in DOCS
        if (partition is None or part == partition) and (p is None or matches(body, p))
    }


S = ("name",)
N = ("n",)
T = ("t",)
#: The fields the cases below filter on (the ``sqlite-indexed`` adapter indexes each of them).
FILTERED_PATHS = [S, N, T, ("flag",), ("labels", "env"), ("nested", "a", "b")]
CASES: list[tuple[Predicate, set[str] | None]] = [
    (Compare(S, Op.EQ, "echo"), {"p1/d01"}),
    (Compare(S, Op.NE, "echo"), None),
    (Compare(S, Op.LT, "echo"), None),
    (Compare(S, Op.LE, "echo"), None),
    (Compare(S, Op.GT, "echo"), {"p1/d02", "p2/d06", "p2/d07", "p1/d10"}),
    (Compare(S, Op.GE, "echo"), None),
    (Compare(S, Op.EQ, "' OR 1=1 --"), {"p1/d09"}),
    (Compare(S, Op.EQ, 'it\'s "quoted"'), {"p2/d07"}),
    (Compare(S, Op.EQ, "naïve ☃ 日本"), {"p1/d10"}),
    (Compare(S, Op.EQ, "1"), {"p2/d11"}),
    (Compare(T, Op.GE, ts(5)), {"p2/d05", "p2/d06", "p2/d11"}),  # "not-a-time" > "2026…"
    (Compare(T, Op.LT, ts(2)), {"p1/d01"}),
    (Compare(T, Op.LE, ts(2)), {"p1/d01", "p1/d02"}),
    (Compare(T, Op.NE, ts(3)), None),
    (Compare(N, Op.GT, 2), {"p1/d03", "p1/d04", "p2/d05", "p2/d07", "p1/d09", "p1/d10"}),
    (Compare(N, Op.EQ, 3), {"p1/d03", "p1/d04", "p1/d10"}),
    (Compare(N, Op.NE, 3), None),
    (Compare(N, Op.LT, 2.5), None),
    (Compare(N, Op.EQ, "3"), {"p2/d11"}),
    (Compare(("flag",), Op.EQ, True), {"p1/d01"}),
    (Compare(("flag",), Op.NE, True), {"p1/d02"}),
    (Compare(("flag",), Op.EQ, False), {"p1/d02"}),
    (Not(Compare(("flag",), Op.EQ, True)), None),
    (Prefix(S, "ech"), {"p1/d01", "p1/d02", "p1/d03", "p1/d04"}),
    (Prefix(S, "ech%"), {"p1/d03"}),
    (Prefix(S, "ech_"), {"p1/d04"}),
    (Prefix(S, "%"), set()),
    (Prefix(S, "Ech"), {"p2/d05"}),
    (Prefix(S, "naïve ☃"), {"p1/d10"}),
    (Prefix(S, "' OR"), {"p1/d09"}),
    (Prefix(S, ""), None),
    (ArrayContains(("tags",), "b"), {"p1/d01", "p1/d02", "p2/d01"}),
    (ArrayContains(("tags",), "%"), {"p2/d06"}),
    (ArrayContains(("tags",), '"); DROP TABLE documents; --'), {"p1/d09"}),
    (ArrayContains(("tags",), "zzz"), set()),
    (MapHasKey(("labels",), "env"), {"p1/d01", "p1/d02", "p2/d05", "p2/d07", "p1/d10"}),
    (MapHasKey(("labels",), "app.kubernetes.io-name"), {"p2/d06"}),
    (MapHasKey(("labels",), "team"), {"p1/d01"}),
    (Exists(T), None),
    (Exists(S), None),
    (Exists(("nested", "a", "b")), {"p1/d01"}),
    (Exists(("nested", "a", "c")), set()),
    (Compare(("nested", "a", "b"), Op.EQ, "deep"), {"p1/d01"}),
    (Compare(("labels", "env"), Op.EQ, "prod"), {"p1/d01", "p2/d05", "p1/d10"}),
    (Compare(("labels", "env"), Op.EQ, 'it\'s "quoted"'), {"p2/d07"}),
    (Compare(("labels", "app.kubernetes.io-name"), Op.EQ, "web"), {"p2/d06"}),
    (Not(Compare(("labels", "env"), Op.EQ, "prod")), None),
    (Or((ArrayContains(("tags",), "c"), Compare(N, Op.EQ, 7))), {"p2/d06", "p2/d07"}),
    (And((Compare(("labels", "env"), Op.EQ, "prod"), Compare(N, Op.GT, 1))), {"p2/d05", "p1/d10"}),
    (And((MapHasKey(("labels",), "env"), Not(Or((Compare(N, Op.LT, 2), Prefix(S, "it")))))), None),
    (And(()), None),
    (Or(()), set()),
    (Not(Or(())), None),
]


@pytest.mark.parametrize(("predicate", "explicit"), CASES, ids=[repr(c[0])[:80] for c in CASES])
async def test_predicates(loaded: DocumentCollection, predicate: Predicate, explicit: set[str] | None) -> None:
    want = expected(predicate)
    if explicit is not None:
        assert {f"{p}/{i}" for p, i in want} == explicit, "reference evaluator disagrees with the case"
    got = await all_pages(loaded, Query(where=predicate, limit=1000))
    assert set(keys(got)) == want
    assert len(got) == len(want)
    assert await loaded.count(where=predicate) == len(want)
    got_p1 = await all_pages(loaded, Query(partition="p1", where=predicate, limit=1000))
    assert set(keys(got_p1)) == expected(predicate, "p1")


async def test_partition_scoped_query_sees_only_its_partition(loaded: DocumentCollection) -> None:
    page = await loaded.query(Query(partition="p2", limit=1000))
    assert {d.partition for d in page.documents} == {"p2"}
    assert set(keys(page.documents)) == expected(None, "p2")
    assert await loaded.count(partition="p1") == len(expected(None, "p1"))
    assert await loaded.count() == len(DOCS)


def _rank(value: Any) -> tuple[int, Any]:
    if value is MISSING or value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    raise AssertionError(value)


def expected_order(order_by: tuple[SortKey, ...], partition: str | None = None) -> list[tuple[str, str]]:
    rows = [(p, i, b) for p, i, b in DOCS if partition is None or p == partition]
    rows.sort(key=lambda r: (r[1], r[0]))
    for key in reversed(order_by):  # stable sorts, least significant key first

        def sort_value(row: tuple[str, str, dict[str, Any]], path: tuple[str, ...] = key.path) -> tuple[int, Any]:
            return _rank(_get(row[2], path))

        rows.sort(key=sort_value, reverse=key.descending)
    return [(p, i) for p, i, _ in rows]


ORDERS = [
    (),
    (SortKey(S),),
    (SortKey(S, descending=True),),
    (SortKey(N),),
    (SortKey(N, descending=True),),
    (SortKey(N, descending=True), SortKey(S)),
    (SortKey(N), SortKey(S, descending=True)),
    (SortKey(T, descending=True), SortKey(N)),
    (SortKey(("labels", "env")), SortKey(N, descending=True)),
    (SortKey(("flag",)), SortKey(("nested", "a", "b"), descending=True)),
]


@pytest.mark.parametrize("order_by", ORDERS, ids=[repr([(k.path, k.descending) for k in o]) for o in ORDERS])
@pytest.mark.parametrize("partition", [None, "p1"])
async def test_order_and_paging_by_three(
    loaded: DocumentCollection, order_by: tuple[SortKey, ...], partition: str | None
) -> None:
    want = expected_order(order_by, partition)
    got = await all_pages(loaded, Query(partition=partition, order_by=order_by, limit=3))
    assert keys(got) == want
    assert len(set(keys(got))) == len(got)


async def test_paging_with_filter_and_order(loaded: DocumentCollection) -> None:
    where = Or((Exists(T), MapHasKey(("labels",), "env")))
    order_by = (SortKey(N, descending=True), SortKey(S))
    got = await all_pages(loaded, Query(where=where, order_by=order_by, limit=2))
    want = [k for k in expected_order(order_by) if k in expected(where)]
    assert keys(got) == want


async def test_ties_break_by_id_then_partition(loaded: DocumentCollection) -> None:
    order_by = (SortKey(N),)
    got = await all_pages(loaded, Query(order_by=order_by, limit=1))
    ones = [k for k in keys(got) if k[1] == "d01"]
    assert ones == [("p1", "d01"), ("p2", "d01")]


async def test_last_page_has_no_continuation(loaded: DocumentCollection) -> None:
    page = await loaded.query(Query(limit=len(DOCS)))
    assert page.continuation is None
    assert len(page.documents) == len(DOCS)
    page = await loaded.query(Query(limit=len(DOCS) - 1))
    assert page.continuation is not None


async def test_writes_between_pages_do_not_duplicate(loaded: DocumentCollection) -> None:
    order_by = (SortKey(S),)
    first = await loaded.query(Query(order_by=order_by, limit=4))
    await loaded.create("p1", "d00", {"name": "\x01 sorts early"})
    assert first.continuation is not None
    rest = await all_pages(loaded, Query(order_by=order_by, limit=4, continuation=first.continuation))
    seen = keys(first.documents) + keys(rest)
    assert len(seen) == len(set(seen))
    assert ("p1", "d00") not in seen


@pytest.mark.parametrize("token", ["garbage!", "", "eyJ4IjoxfQ", "x" * 9000, "AAAA"])
async def test_corrupt_continuation_is_invalid_page_token(loaded: DocumentCollection, token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        await loaded.query(Query(limit=2, continuation=token))
    assert err.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in err.value.field_violations] == ["page_token"]


async def test_continuation_from_another_query_is_refused(loaded: DocumentCollection) -> None:
    page = await loaded.query(Query(order_by=(SortKey(S),), limit=2))
    assert page.continuation is not None
    for other in [
        Query(order_by=(SortKey(S, descending=True),), limit=2, continuation=page.continuation),
        Query(order_by=(SortKey(S),), partition="p1", limit=2, continuation=page.continuation),
        Query(where=Exists(S), order_by=(SortKey(S),), limit=2, continuation=page.continuation),
    ]:
        with pytest.raises(InvalidArgument) as err:
            await loaded.query(other)
        assert err.value.reason == "INVALID_PAGE_TOKEN"


SCHEMA = FilterSchema(
    {
        "name": FieldSpec(S, FieldKind.STRING),
        "labels": FieldSpec(("labels",), FieldKind.STRING_MAP),
        "tags": FieldSpec(("tags",), FieldKind.STRING_LIST),
        "t": FieldSpec(T, FieldKind.TIMESTAMP),
        "n": FieldSpec(N, FieldKind.INT),
    }
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (r'labels.env = "it\'s \"quoted\""', {"p2/d07"}),
        ('name = "\' OR 1=1 --"', {"p1/d09"}),
        ("name = '\"); DROP TABLE documents; --'", set()),
        (r'tags:"\"); DROP TABLE documents; --"', {"p1/d09"}),
        ('name = "ech%*"', {"p1/d03"}),
        ('labels.env = prod t > "2026-01-01T13:00:00+01:00"', {"p2/d05"}),
        ("labels:env AND NOT labels.env = prod", {"p1/d02", "p2/d07"}),
        ("-tags:b n >= 3 n < 6", {"p1/d03", "p1/d04", "p2/d05", "p1/d10"}),
        ('name = "naïve ☃*"', {"p1/d10"}),
    ],
)
async def test_parsed_filters_end_to_end(loaded: DocumentCollection, text: str, want: set[str]) -> None:
    predicate = parse_filter(text, SCHEMA)
    assert predicate is not None
    got = await all_pages(loaded, Query(where=predicate, limit=5))
    assert {f"{d.partition}/{d.id}" for d in got} == want
    assert await loaded.count() == len(DOCS), "nothing was dropped or altered"


@pytest.mark.parametrize("text", ['labels:"a\\"b"', "labels.a'b = x", 'labels."x" = 1', "labels:A", "labels.Env:*"])
def test_hostile_label_keys_are_rejected_by_the_schema_layer(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_filter(text, SCHEMA)
    assert err.value.reason == "INVALID_FILTER"


@pytest.mark.parametrize("bad", [('a"b',), ("x", "$.y"), ("",), ("a b",)])
async def test_unaddressable_paths_are_refused(collection: DocumentCollection, bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="path"):
        await collection.query(Query(where=Exists(bad)))
    with pytest.raises(ValueError, match="path"):
        await collection.count(where=Compare(bad, Op.EQ, 1))
    with pytest.raises(ValueError, match="path"):
        await collection.query(Query(order_by=(SortKey(bad),)))


async def test_an_empty_path_is_refused_in_a_filter(collection: DocumentCollection) -> None:
    with pytest.raises(ValueError, match="path"):
        await collection.query(Query(where=Exists(())))
    with pytest.raises(ValueError, match="path"):
        await collection.count(where=Compare((), Op.EQ, 1))
