"""The typed predicate tree every filter is parsed into, and every backend compiles from.

Semantics are two-valued and the same for every backend:

* A :class:`Compare` or :class:`Prefix` is true only when the field is present, of the value's JSON
  type (string / number / boolean) and the comparison holds. A missing, ``null`` or differently typed
  field makes it false (so ``x != "a"`` does not match documents without ``x``).
* :class:`Not` is the exact complement of its operand.
* :class:`Exists` and :class:`MapHasKey` are true when the property is present, even if ``null``.
* :class:`ArrayContains` is true when the field is an array with an element equal to the value
  (same JSON type).
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMPARISONS",
    "And",
    "ArrayContains",
    "Compare",
    "Exists",
    "MapHasKey",
    "Not",
    "Op",
    "Or",
    "Path",
    "Predicate",
    "Prefix",
    "Scalar",
    "SortKey",
    "depth",
    "same_json_kind",
    "walk",
]

Path = tuple[str, ...]
Scalar = str | int | float | bool


class Op(enum.Enum):
    """Comparison operators."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


#: What each operator means between a stored value and the wanted one, once both are of one JSON kind (for the
#: adapters that evaluate predicates in memory; the SQL ones compile them).
COMPARISONS: Mapping[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def same_json_kind(value: Any, wanted: Scalar) -> bool:
    """Whether ``value`` has the JSON type of ``wanted`` (string, number or boolean; booleans are not numbers):
    a comparison or an array element matches only then."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(wanted, bool)
    if isinstance(wanted, str):
        return isinstance(value, str)
    return isinstance(value, int | float)


@dataclass(frozen=True)
class Compare:
    """``path <op> value``."""

    path: Path
    op: Op
    value: Scalar


@dataclass(frozen=True)
class Prefix:
    """The string at ``path`` starts with ``prefix`` (case-sensitive; AIP-160 ``"abc*"``)."""

    path: Path
    prefix: str


@dataclass(frozen=True)
class ArrayContains:
    """The array at ``path`` contains ``value``."""

    path: Path
    value: Scalar


@dataclass(frozen=True)
class MapHasKey:
    """The object at ``path`` has the key ``key``."""

    path: Path
    key: str


@dataclass(frozen=True)
class Exists:
    """The property at ``path`` is present."""

    path: Path


@dataclass(frozen=True)
class And:
    """All items hold (an empty ``And`` is true)."""

    items: tuple[Predicate, ...]


@dataclass(frozen=True)
class Or:
    """At least one item holds (an empty ``Or`` is false)."""

    items: tuple[Predicate, ...]


@dataclass(frozen=True)
class Not:
    """The item does not hold."""

    item: Predicate


Predicate = Compare | Prefix | ArrayContains | MapHasKey | Exists | And | Or | Not


@dataclass(frozen=True)
class SortKey:
    """One ``order_by`` key: a document path and its direction."""

    path: Path
    descending: bool = False


def walk(predicate: Predicate) -> list[Predicate]:
    """Every node of the tree, pre-order (iterative, so deep trees cannot overflow the stack)."""
    out: list[Predicate] = []
    stack: list[Predicate] = [predicate]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, And | Or):
            stack.extend(reversed(node.items))
        elif isinstance(node, Not):
            stack.append(node.item)
    return out


def depth(predicate: Predicate) -> int:
    """Nesting depth: a leaf is 1, ``And``/``Or``/``Not`` add one level."""
    best = 0
    stack: list[tuple[Predicate, int]] = [(predicate, 1)]
    while stack:
        node, level = stack.pop()
        best = max(best, level)
        if isinstance(node, And | Or):
            stack.extend((item, level + 1) for item in node.items)
        elif isinstance(node, Not):
            stack.append((node.item, level + 1))
    return best
