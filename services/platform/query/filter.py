"""AIP-160 filters and AIP-132 ``order_by`` strings → the typed predicate tree.

Supported filter subset (AIP-160): comparisons ``= != < > <= >=``, has ``:``, ``AND``, ``OR``,
``NOT`` and ``-`` negation, parentheses, implicit ``AND`` by juxtaposition (``a = 1 b = 2``), dotted
traversal into map fields (``labels.env = "prod"``), quoted strings (``"…"`` or ``'…'`` with ``\\``
escapes ``\\" \\' \\\\ \\n \\r \\t \\* \\uXXXX``), bare words, numbers, ``true``/``false``, the presence
test ``field:*`` and trailing string wildcards (``display_name = "ech*"`` → prefix match; escape a
literal star as ``\\*``).

As in AIP-160, ``OR`` binds tighter than ``AND`` and implicit ``AND``: ``a = 1 AND b = 2 OR c = 3`` means
``a = 1 AND (b = 2 OR c = 3)``. Keywords are upper case.

Per field kind:

==============  ==========================================================================
STRING          all comparisons (byte-wise order), ``"x*"`` prefix with ``=``/``:``/``!=``
ENUM            ``=``, ``!=``, ``:`` by value name (``state = ACTIVE``)
TIMESTAMP       all comparisons; the value is an RFC 3339 string, normalised to UTC
BOOL            ``=``, ``!=``, ``:`` with ``true``/``false``
INT             all comparisons with a 64-bit integer
STRING_LIST     ``tags:"x"`` (contains); ``tags = "x"`` is accepted as a synonym for convenience
STRING_MAP      ``labels:env`` (has key), ``labels.env:*`` (has key), ``labels.env = "prod"`` and
                the other comparisons on the value (a string); keys match ``^[a-z][a-z0-9_.-]{0,62}$``
==============  ==========================================================================

For a non-map field ``field:value`` means ``field = value`` and ``field:*`` means "field is present".
Every problem raises :class:`~services.platform.errors.InvalidArgument` with reason ``INVALID_FILTER``
(or ``INVALID_FIELD`` on ``order_by``).

The grammar and the tree walker live in :mod:`services.platform.query.filter_syntax`, imported by the first
non-empty filter: lark and the parser tables it builds cost every service memory and start time, and only the
list methods that take a filter need them (keep ``filter_syntax`` out of module-level imports).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from services.platform.errors import FieldViolation, InvalidArgument
from services.platform.query.predicate import Path, Predicate, SortKey, depth

__all__ = [
    "MAP_KEY_RE",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_TERMS",
    "MAX_ORDER_BY_LENGTH",
    "FieldKind",
    "FieldSpec",
    "FilterSchema",
    "invalid_filter",
    "parse_filter",
    "parse_order_by",
]

MAX_FILTER_LENGTH = 2000
MAX_FILTER_DEPTH = 16
MAX_FILTER_TERMS = 64
MAX_ORDER_BY_LENGTH = 500
MAP_KEY_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


class FieldKind(enum.Enum):
    """How a filterable field is stored and which operators it allows."""

    STRING = "string"
    ENUM = "enum"
    TIMESTAMP = "timestamp"
    BOOL = "bool"
    INT = "int"
    STRING_LIST = "string_list"
    STRING_MAP = "string_map"


@dataclass(frozen=True)
class FieldSpec:
    """A filterable field: where it lives in the document and its kind (enum names for ENUM)."""

    path: Path
    kind: FieldKind
    enum_values: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.path or any(not part for part in self.path):
            raise ValueError("FieldSpec.path must be a non-empty tuple of non-empty names")
        if self.kind is FieldKind.ENUM and not self.enum_values:
            raise ValueError("an ENUM FieldSpec needs enum_values")


class FilterSchema(Mapping[str, FieldSpec]):
    """The documented filter fields of one collection: user-facing name → :class:`FieldSpec`."""

    def __init__(self, fields: Mapping[str, FieldSpec]) -> None:
        self._fields = dict(fields)

    def __getitem__(self, name: str) -> FieldSpec:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"FilterSchema({self._fields!r})"


def invalid_filter(description: str) -> InvalidArgument:
    """The INVALID_FILTER error of the ``filter`` field, saying ``description``."""
    return InvalidArgument(
        f"invalid filter: {description}",
        reason="INVALID_FILTER",
        metadata={"field": "filter"},
        field_violations=[FieldViolation("filter", description)],
    )


def _paren_depth(text: str) -> int:
    """Maximum parenthesis nesting outside quoted strings (checked before parsing)."""
    best = level = 0
    quote = ""
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            level += 1
            best = max(best, level)
        elif ch == ")":
            level = max(level - 1, 0)
    return best


def parse_filter(text: str, schema: Mapping[str, FieldSpec]) -> Predicate | None:
    """Parse an AIP-160 filter against ``schema``; ``None`` for an empty or blank filter."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid_filter(f"too long: {len(text)} characters (at most {MAX_FILTER_LENGTH})")
    if not text.strip():
        return None
    if _paren_depth(text) > MAX_FILTER_DEPTH:
        raise invalid_filter(f"too deep: at most {MAX_FILTER_DEPTH} levels of nesting")
    from services.platform.query.filter_syntax import build_predicate

    predicate = build_predicate(text, schema)
    if predicate is None:
        return None
    if depth(predicate) > MAX_FILTER_DEPTH:
        raise invalid_filter(f"too deep: at most {MAX_FILTER_DEPTH} levels of nesting")
    return predicate


def _order_invalid(description: str) -> InvalidArgument:
    return InvalidArgument.field("order_by", description)


def parse_order_by(text: str, allowed: Mapping[str, Path]) -> list[SortKey]:
    """Parse an AIP-132 ``order_by`` (``"create_time desc, display_name"``) against ``allowed``.

    ``allowed`` maps user-facing field names to document paths. Directions are ``asc`` (default) and
    ``desc``, case-insensitive; a field may appear once. Errors raise InvalidArgument (INVALID_FIELD,
    field ``order_by``).
    """
    if len(text) > MAX_ORDER_BY_LENGTH:
        raise _order_invalid(f"too long: at most {MAX_ORDER_BY_LENGTH} characters")
    if not text.strip():
        return []
    keys: list[SortKey] = []
    seen: set[str] = set()
    for position, item in enumerate(text.split(","), start=1):
        words = item.split()
        if not words:
            raise _order_invalid(f"item {position} is empty")
        if len(words) > 2:
            raise _order_invalid(f"item {position} ({item.strip()!r}) should be '<field>' or '<field> desc'")
        name = words[0]
        descending = False
        if len(words) == 2:
            direction = words[1].lower()
            if direction not in {"asc", "desc"}:
                raise _order_invalid(f"unknown direction {words[1]!r} for {name}; use asc or desc")
            descending = direction == "desc"
        path = allowed.get(name)
        if path is None:
            names = ", ".join(sorted(allowed)) or "none"
            raise _order_invalid(f"cannot order by {name!r}; allowed fields: {names}")
        if name in seen:
            raise _order_invalid(f"{name} appears more than once")
        seen.add(name)
        keys.append(SortKey(tuple(path), descending))
    return keys
