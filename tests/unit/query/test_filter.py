"""AIP-160 filter parser: explicit cases and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.platform.errors import InvalidArgument
from services.platform.query.filter import (
    MAX_FILTER_LENGTH,
    FieldKind,
    FieldSpec,
    FilterSchema,
    parse_filter,
)
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
)

SCHEMA = FilterSchema(
    {
        "display_name": FieldSpec(("display_name",), FieldKind.STRING),
        "state": FieldSpec(("state",), FieldKind.ENUM, frozenset({"ACTIVE", "DELETED"})),
        "create_time": FieldSpec(("create_time",), FieldKind.TIMESTAMP),
        "long_running": FieldSpec(("long_running",), FieldKind.BOOL),
        "attempt": FieldSpec(("attempt",), FieldKind.INT),
        "tags": FieldSpec(("tags",), FieldKind.STRING_LIST),
        "labels": FieldSpec(("labels",), FieldKind.STRING_MAP),
        "extension_version": FieldSpec(("extension_version",), FieldKind.STRING),
        "profile.name": FieldSpec(("profile", "name"), FieldKind.STRING),
    }
)

DN = ("display_name",)
STATE = ("state",)
CT = ("create_time",)
LBL = ("labels",)


def parse(text: str) -> Predicate | None:
    return parse_filter(text, SCHEMA)


def error(text: str) -> str:
    with pytest.raises(InvalidArgument) as err:
        parse(text)
    exc = err.value
    assert exc.reason == "INVALID_FILTER"
    assert len(exc.field_violations) == 1
    assert exc.field_violations[0].field == "filter"
    return exc.field_violations[0].description


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_is_none(text: str) -> None:
    assert parse(text) is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("state = ACTIVE", Compare(STATE, Op.EQ, "ACTIVE")),
        ('state = "ACTIVE"', Compare(STATE, Op.EQ, "ACTIVE")),
        ("state != DELETED", Compare(STATE, Op.NE, "DELETED")),
        ("state:ACTIVE", Compare(STATE, Op.EQ, "ACTIVE")),
        ('display_name = "echo"', Compare(DN, Op.EQ, "echo")),
        ("display_name = echo", Compare(DN, Op.EQ, "echo")),
        ("display_name = 'echo'", Compare(DN, Op.EQ, "echo")),
        ("display_name = 123", Compare(DN, Op.EQ, "123")),
        ('display_name < "m"', Compare(DN, Op.LT, "m")),
        ('display_name >= "m"', Compare(DN, Op.GE, "m")),
        ('display_name = "ech*"', Prefix(DN, "ech")),
        ("display_name = ech*", Prefix(DN, "ech")),
        ('display_name:"ech*"', Prefix(DN, "ech")),
        ('display_name != "ech*"', Not(Prefix(DN, "ech"))),
        (r'display_name = "a\*"', Compare(DN, Op.EQ, "a*")),
        (r'display_name = "a\*b*"', Prefix(DN, "a*b")),
        (r'display_name = "q\"x\\y\u00e9\n"', Compare(DN, Op.EQ, 'q"x\\yé\n')),
        (r"display_name = 'it\'s'", Compare(DN, Op.EQ, "it's")),
        ("display_name:*", Exists(DN)),
        ('create_time > "2026-01-01T00:00:00Z"', Compare(CT, Op.GT, "2026-01-01T00:00:00.000000Z")),
        ('create_time <= "2026-01-01T01:00:00.5+01:00"', Compare(CT, Op.LE, "2026-01-01T00:00:00.500000Z")),
        ("create_time < 2026-01-01T00:00:00Z", Compare(CT, Op.LT, "2026-01-01T00:00:00.000000Z")),
        ("long_running = true", Compare(("long_running",), Op.EQ, True)),
        ("long_running != FALSE", Compare(("long_running",), Op.NE, False)),
        ("attempt >= 2", Compare(("attempt",), Op.GE, 2)),
        ("attempt = -3", Compare(("attempt",), Op.EQ, -3)),
        ('tags:"ml"', ArrayContains(("tags",), "ml")),
        ("tags:ml", ArrayContains(("tags",), "ml")),
        ('tags = "ml"', ArrayContains(("tags",), "ml")),
        ("tags:*", Exists(("tags",))),
        ("labels:env", MapHasKey(LBL, "env")),
        ('labels:"env"', MapHasKey(LBL, "env")),
        ("labels.env:*", MapHasKey(LBL, "env")),
        ('labels.env = "prod"', Compare(("labels", "env"), Op.EQ, "prod")),
        ("labels.env != prod", Compare(("labels", "env"), Op.NE, "prod")),
        ('labels.env = "pr*"', Prefix(("labels", "env"), "pr")),
        ("labels.app.tier = web", Compare(("labels", "app.tier"), Op.EQ, "web")),
        ("labels.my-key = x", Compare(("labels", "my-key"), Op.EQ, "x")),
        ("labels:*", Exists(LBL)),
        ('profile.name = "default"', Compare(("profile", "name"), Op.EQ, "default")),
        ("extension_version = extensions/echo/versions/1.0.0", None),
    ],
)
def test_single_restrictions(text: str, want: Predicate | None) -> None:
    got = parse(text)
    if want is None:
        assert got == Compare(("extension_version",), Op.EQ, "extensions/echo/versions/1.0.0")
    else:
        assert got == want


A = Compare(STATE, Op.EQ, "ACTIVE")
B = Compare(("attempt",), Op.EQ, 1)
C = Compare(("attempt",), Op.EQ, 2)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("state = ACTIVE AND attempt = 1", And((A, B))),
        ("state = ACTIVE attempt = 1", And((A, B))),
        ("state = ACTIVE OR attempt = 1", Or((A, B))),
        # AIP-160: OR binds tighter than AND.
        ("state = ACTIVE AND attempt = 1 OR attempt = 2", And((A, Or((B, C))))),
        ("state = ACTIVE attempt = 1 OR attempt = 2", And((A, Or((B, C))))),
        ("(state = ACTIVE AND attempt = 1) OR attempt = 2", Or((And((A, B)), C))),
        ("NOT state = ACTIVE", Not(A)),
        ("-state = ACTIVE", Not(A)),
        ("NOT (state = ACTIVE OR attempt = 1)", Not(Or((A, B)))),
        ("-(state = ACTIVE)", Not(A)),
        ("((state = ACTIVE))", A),
        ("state = ACTIVE AND (attempt = 1 AND attempt = 2)", And((A, B, C))),
        ("  state=ACTIVE\nAND\tattempt=1  ", And((A, B))),
    ],
)
def test_boolean_structure(text: str, want: Predicate) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("state = ", "column 9"),
        ("state = ACTIVE AND", "unexpected end of filter"),
        ("(state = ACTIVE", "unexpected end of filter"),
        ("state = ACTIVE)", "column 15"),
        ("state == ACTIVE", "column 8"),
        ('display_name = "unterminated', "syntax error"),
        ("state = ACTIVE %", "unexpected character '%'"),
        ("foo = 1", "unknown field 'foo'"),
        ("foo = 1", "filterable fields: attempt, create_time"),
        ("state = RUNNING", "allowed values: ACTIVE, DELETED"),
        ("state = active", "allowed values"),
        ("state > ACTIVE", "only =, != and :"),
        ("long_running < true", "only =, != and :"),
        ("long_running = yes", "expected true or false"),
        ("attempt = one", "expected an integer"),
        ("attempt = 1.5", "expected an integer"),
        ("attempt = 99999999999999999999", "64-bit"),
        ('create_time > "yesterday"', "invalid timestamp"),
        ('create_time > "2026-13-01T00:00:00Z"', "invalid timestamp"),
        ('create_time > "2026-01-01"', "RFC 3339"),
        ("tags != ml", "is a list"),
        ("tags > ml", "is a list"),
        ('tags = "m*"', "wildcards"),
        ("labels = x", "is a map"),
        ("labels.Env = x", "invalid key 'Env'"),
        ('labels:"a\\"b"', "invalid key"),
        ("labels:9x", "invalid key"),
        ("display_name.x = 1", "has no subfields"),
        ('display_name = "*foo"', "only a trailing '*'"),
        ('display_name = "a*b"', "escape a literal star"),
        ('display_name > "a*"', "wildcard value cannot be used"),
        ('display_name = "\\q"', "invalid escape"),
        ('display_name = "\\u12"', "invalid \\u escape"),
        ('display_name = "\\ud800"', "surrogate"),
        ('display_name = "\\u0000"', "NUL"),
        ("state = *", "only allowed after ':'"),
        ("state", "is not a comparison"),
        ("state = ACTIVE and attempt = 1", "upper case"),
        ("NOT NOT state = ACTIVE", "misplaced operator 'NOT' at column 5"),
        ("state = ACTIVE AND OR attempt = 1", "misplaced operator"),
    ],
)
def test_errors_are_clear(text: str, needle: str) -> None:
    assert needle in error(text)


def test_too_long() -> None:
    text = "display_name = " + '"' + "x" * MAX_FILTER_LENGTH + '"'
    assert "too long" in error(text)


def test_length_limit_is_inclusive() -> None:
    text = 'display_name = "' + "x" * (MAX_FILTER_LENGTH - 17) + '"'
    assert len(text) == MAX_FILTER_LENGTH
    assert parse(text) is not None


def test_too_deep() -> None:
    assert parse("(" * 15 + "state = ACTIVE" + ")" * 15) == A
    assert "too deep" in error("(" * 17 + "state = ACTIVE" + ")" * 17)
    assert "too deep" in error("(" * 500 + "state = ACTIVE" + ")" * 500)


def test_nested_predicate_depth_is_limited() -> None:
    text = "state = ACTIVE"
    for i in range(16):
        text = f"attempt = {i} {'OR' if i % 2 else 'AND'} ({text})"
        text = f"NOT ({text})" if i % 3 == 0 else text
    assert "too deep" in error(text)


def test_too_many_terms() -> None:
    ok = " OR ".join(f"attempt = {i}" for i in range(64))
    result = parse(ok)
    assert isinstance(result, Or)
    assert len(result.items) == 64
    assert "too many terms" in error(ok + " OR attempt = 64")


def test_parens_inside_strings_do_not_count_as_depth() -> None:
    assert parse('display_name = "' + "(" * 40 + '"') == Compare(DN, Op.EQ, "(" * 40)


def _parse_or_invalid(text: str) -> None:
    """Parsing either succeeds or raises InvalidArgument(INVALID_FILTER) — nothing else."""
    reason = "INVALID_FILTER"
    try:
        parse(text)
    except InvalidArgument as exc:
        reason = exc.reason
    assert reason == "INVALID_FILTER"


_ALPHABET = st.sampled_from(
    [
        *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ()\"'\\*:.=!<>-_,+/@\n\t%é☃",
        "AND",
        "OR",
        "NOT",
        "state",
        "labels",
        "tags",
        "attempt",
        "create_time",
        "display_name",
        "\\u",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_parse_never_raises_anything_but_invalid_argument_tokens(text: str) -> None:
    _parse_or_invalid(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_raises_anything_but_invalid_argument_text(text: str) -> None:
    _parse_or_invalid(text)
