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
from dataclasses import dataclass

__all__ = [
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
