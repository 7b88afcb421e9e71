"""The AIP-160 filter grammar (lark, LALR) and the walk from its parse tree to checked predicates.

Only :func:`services.platform.query.filter.parse_filter` imports this module, when it first gets a non-empty
filter: see that module for the language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from services.platform import timefmt
from services.platform.errors import InvalidArgument
from services.platform.query.filter import (
    MAP_KEY_RE,
    MAX_FILTER_TERMS,
    FieldKind,
    FieldSpec,
    invalid_filter,
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
    Path,
    Predicate,
    Prefix,
)

__all__ = ["GRAMMAR", "build_predicate"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT_RE = re.compile(r"^[+-]?[0-9]+$")

GRAMMAR = r"""
start: expr?
expr: seq (AND seq)*
seq: factor+
factor: term (OR term)*
term: negation? simple
negation: NOT | MINUS
?simple: restriction | composite
composite: LPAR expr RPAR
restriction: member (comparator arg)?
member: NAME (DOT KEY)*
comparator: EQ | NE | LE | GE | LT | GT | HAS
arg: STRING | WORD | STAR

AND: "AND"
OR: "OR"
NOT: "NOT"
MINUS: "-"
LPAR: "("
RPAR: ")"
DOT: "."
EQ: "="
NE: "!="
LE: "<="
GE: ">="
LT: "<"
GT: ">"
HAS: ":"
STAR: "*"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
KEY: /[A-Za-z0-9_][A-Za-z0-9_\-]*/
WORD: /[A-Za-z0-9_\-+.:@\/]+\*?/
STRING: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
%ignore /[ \t\r\n]+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)

_TERMINAL_NAMES = {
    "AND": "AND",
    "OR": "OR",
    "NOT": "NOT",
    "MINUS": "'-'",
    "LPAR": "'('",
    "RPAR": "')'",
    "DOT": "'.'",
    "EQ": "'='",
    "NE": "'!='",
    "LE": "'<='",
    "GE": "'>='",
    "LT": "'<'",
    "GT": "'>'",
    "HAS": "':'",
    "STAR": "'*'",
    "NAME": "a field name",
    "KEY": "a key",
    "WORD": "a value",
    "STRING": "a quoted string",
    "$END": "end of filter",
}

_OPS = {"EQ": Op.EQ, "NE": Op.NE, "LT": Op.LT, "LE": Op.LE, "GT": Op.GT, "GE": Op.GE}
_ORDERING_OPS = {Op.LT, Op.LE, Op.GT, Op.GE}


@dataclass(frozen=True)
class _Arg:
    text: str
    quoted: bool
    wildcard: bool  # a trailing unescaped '*' (prefix match); ``text`` excludes it
    star: bool  # the bare presence value ``*``

    def describe(self) -> str:
        return "*" if self.star else repr(self.text + ("*" if self.wildcard else ""))


class _Builder:
    """Turns the lark tree into predicates while checking them against the schema."""

    def __init__(self, schema: Mapping[str, FieldSpec]) -> None:
        self.schema = schema
        self.terms = 0

    def expr(self, tree: Tree[Token]) -> Predicate:
        items = [self.seq(c) for c in tree.children if isinstance(c, Tree)]
        return _and(items)

    def seq(self, tree: Tree[Token]) -> Predicate:
        return _and([self.factor(c) for c in tree.children if isinstance(c, Tree)])

    def factor(self, tree: Tree[Token]) -> Predicate:
        return _or([self.term(c) for c in tree.children if isinstance(c, Tree)])

    def term(self, tree: Tree[Token]) -> Predicate:
        negate = False
        inner: Tree[Token] | None = None
        for child in tree.children:
            if isinstance(child, Tree) and child.data == "negation":
                negate = True
            elif isinstance(child, Tree):
                inner = child
        assert inner is not None
        if inner.data == "composite":
            sub = next(c for c in inner.children if isinstance(c, Tree))
            result = self.expr(sub)
        else:
            result = self.restriction(inner)
        return Not(result) if negate else result

    def restriction(self, tree: Tree[Token]) -> Predicate:
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise invalid_filter(f"too many terms: at most {MAX_FILTER_TERMS} comparisons are allowed")
        member = tree.children[0]
        assert isinstance(member, Tree)
        parts = [str(tok) for tok in member.children if isinstance(tok, Token) and tok.type != "DOT"]
        if len(tree.children) == 1:
            word = ".".join(parts)
            if word in {"AND", "OR", "NOT"}:
                first = member.children[0]
                column = first.column if isinstance(first, Token) else "?"
                raise invalid_filter(f"misplaced operator {word!r} at column {column}")
            if word.upper() in {"AND", "OR", "NOT"}:
                raise invalid_filter(f"{word!r}: the operators AND, OR and NOT must be written in upper case")
            raise invalid_filter(f"{word!r} is not a comparison; write <field> = <value> (or <field>:<value>)")
        comparator, arg_tree = tree.children[1], tree.children[2]
        assert isinstance(comparator, Tree)
        assert isinstance(arg_tree, Tree)
        op_token = comparator.children[0]
        assert isinstance(op_token, Token)
        arg = _arg(arg_tree.children[0])
        name, spec, key = self._resolve(parts)
        has = op_token.type == "HAS"
        op = Op.EQ if has else _OPS[op_token.type]
        symbol = str(op_token)
        if has and arg.star:
            return MapHasKey(spec.path, key) if key is not None else Exists(spec.path)
        if arg.star:
            raise invalid_filter(f"{name}: '*' is only allowed after ':' (as in {name}:*)")
        if spec.kind is FieldKind.STRING_MAP:
            if key is None:
                if not has:
                    raise invalid_filter(
                        f"{name} is a map: compare one key ({name}.<key> {symbol} value) "
                        f"or test for a key ({name}:<key>)"
                    )
                _reject_wildcard(name, arg)
                return MapHasKey(spec.path, _map_key(name, arg.text))
            return _string_predicate(f"{name}.{key}", (*spec.path, key), op, symbol, arg)
        if spec.kind is FieldKind.STRING:
            return _string_predicate(name, spec.path, op, symbol, arg)
        if spec.kind is FieldKind.STRING_LIST:
            if op is not Op.EQ:
                raise invalid_filter(f"{name} is a list: use {name}:<value> (contains); {symbol!r} is not supported")
            _reject_wildcard(name, arg)
            return ArrayContains(spec.path, _text(arg.text))
        _reject_wildcard(name, arg)
        if spec.kind is FieldKind.ENUM:
            _only_equality(name, op, symbol, "an enum")
            if arg.text not in spec.enum_values:
                allowed = ", ".join(sorted(spec.enum_values))
                raise invalid_filter(f"invalid value {arg.text!r} for {name}; allowed values: {allowed}")
            return Compare(spec.path, op, arg.text)
        if spec.kind is FieldKind.BOOL:
            _only_equality(name, op, symbol, "a boolean")
            lowered = arg.text.lower()
            if lowered not in {"true", "false"}:
                raise invalid_filter(f"invalid value {arg.text!r} for {name}; expected true or false")
            return Compare(spec.path, op, lowered == "true")
        if spec.kind is FieldKind.INT:
            if not _INT_RE.fullmatch(arg.text):
                raise invalid_filter(f"invalid value {arg.text!r} for {name}; expected an integer")
            number = int(arg.text)
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise invalid_filter(f"value {arg.text!r} for {name} is out of the 64-bit integer range")
            return Compare(spec.path, op, number)
        if spec.kind is FieldKind.TIMESTAMP:
            try:
                stamp = timefmt.to_storage(timefmt.parse_rfc3339(arg.text))
            except ValueError:
                raise invalid_filter(
                    f'invalid timestamp {arg.text!r} for {name}; expected RFC 3339 such as "2026-01-31T12:00:00Z"'
                ) from None
            return Compare(spec.path, op, stamp)
        raise invalid_filter(f"field {name} cannot be filtered")  # pragma: no cover - exhaustive above

    def _resolve(self, parts: list[str]) -> tuple[str, FieldSpec, str | None]:
        for cut in range(len(parts), 0, -1):
            name = ".".join(parts[:cut])
            spec = self.schema.get(name)
            if spec is None:
                continue
            rest = parts[cut:]
            if not rest:
                return name, spec, None
            if spec.kind is not FieldKind.STRING_MAP:
                raise invalid_filter(f"field {name} has no subfields ({'.'.join(parts)!r})")
            return name, spec, _map_key(name, ".".join(rest))
        allowed = ", ".join(sorted(self.schema)) or "none"
        raise invalid_filter(f"unknown field {'.'.join(parts)!r}; filterable fields: {allowed}")


def _and(items: list[Predicate]) -> Predicate:
    flat: list[Predicate] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _or(items: list[Predicate]) -> Predicate:
    flat: list[Predicate] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _text(value: str) -> str:
    if "\x00" in value:
        raise invalid_filter("values must not contain NUL characters")
    return value


def _map_key(name: str, key: str) -> str:
    if not MAP_KEY_RE.fullmatch(key):
        raise invalid_filter(f"invalid key {key!r} for {name}; keys match ^[a-z][a-z0-9_.-]{{0,62}}$")
    return key


def _reject_wildcard(name: str, arg: _Arg) -> None:
    if arg.wildcard:
        raise invalid_filter(f"{name}: wildcards ('*') are only supported on string fields")


def _only_equality(name: str, op: Op, symbol: str, what: str) -> None:
    if op in _ORDERING_OPS:
        raise invalid_filter(f"{name} is {what}: only =, != and : are supported, not {symbol!r}")


def _string_predicate(name: str, path: Path, op: Op, symbol: str, arg: _Arg) -> Predicate:
    value = _text(arg.text)
    if not arg.wildcard:
        return Compare(path, op, value)
    if op is Op.EQ:
        return Prefix(path, value)
    if op is Op.NE:
        return Not(Prefix(path, value))
    raise invalid_filter(f"{name}: a wildcard value cannot be used with {symbol!r}")


def _arg(token: Tree[Token] | Token) -> _Arg:
    assert isinstance(token, Token)
    if token.type == "STAR":
        return _Arg("", quoted=False, wildcard=False, star=True)
    raw = str(token)
    if token.type == "WORD":
        if raw.endswith("*"):
            return _Arg(raw[:-1], quoted=False, wildcard=True, star=False)
        return _Arg(raw, quoted=False, wildcard=False, star=False)
    text, wildcard = _unescape(raw[1:-1], token.column or 0)
    return _Arg(text, quoted=True, wildcard=wildcard, star=False)


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "*": "*"}


def _unescape(body: str, column: int) -> tuple[str, bool]:
    """Decode a quoted string body; report whether it ends in an unescaped ``*`` (a prefix wildcard)."""
    out: list[str] = []
    i = 0
    wildcard = False
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt == "u":
                digits = body[i + 2 : i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise invalid_filter(f"invalid \\u escape in the string at column {column}")
                code = int(digits, 16)
                if 0xD800 <= code <= 0xDFFF:
                    raise invalid_filter(f"invalid \\u escape (surrogate) in the string at column {column}")
                out.append(chr(code))
                i += 6
                continue
            if nxt not in _ESCAPES:
                raise invalid_filter(f"invalid escape '\\{nxt}' in the string at column {column}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == "*":
            if i != len(body) - 1:
                raise invalid_filter(
                    f"only a trailing '*' wildcard is supported (string at column {column}); "
                    "escape a literal star as \\*"
                )
            wildcard = True
        else:
            out.append(ch)
        i += 1
    return "".join(out), wildcard


def _syntax_error(text: str, exc: UnexpectedInput) -> InvalidArgument:
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            got, column = "end of filter", len(text) + 1
        else:
            got, column = repr(str(token)), exc.column
        expected = sorted({_TERMINAL_NAMES.get(t, t) for t in exc.expected if not t.startswith("__")})
        hint = f"; expected {', '.join(expected)}" if expected else ""
        return invalid_filter(f"syntax error at column {column}: unexpected {got}{hint}")
    if isinstance(exc, UnexpectedCharacters):
        return invalid_filter(f"syntax error at column {exc.column}: unexpected character {exc.char!r}")
    return invalid_filter(f"syntax error at column {exc.column}")


def build_predicate(text: str, schema: Mapping[str, FieldSpec]) -> Predicate | None:
    """Parse ``text`` (length and nesting already checked) into a predicate over ``schema``; None when it holds
    no expression."""
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    except LarkError:
        raise invalid_filter("syntax error") from None
    expr = next((c for c in tree.children if isinstance(c, Tree)), None)
    if expr is None:
        return None
    return _Builder(schema).expr(expr)
