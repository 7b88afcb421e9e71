"""The catalog's ranked full-text index with facets, held in memory by every catalog replica.

The index knows nothing about where extensions come from: :mod:`services.catalog.adapters.search_feed`
keeps it current from the document store, the same way on every backend, so replicas need no shared
search service.

* Text is folded like SQLite FTS5's ``unicode61 remove_diacritics 2`` tokenizer: runs of letters and
  digits, lower case, accents removed. Every query word must match a word of some field, as a prefix.
* Ranking: a document's tier is set by its weakest query word: 0 when every word matches the id or the
  display name, 1 when every word matches there or in the tags, 2 otherwise (the description, category,
  publisher). Within a tier, BM25 (k1 1.2, b 0.75; field weights id and display name 10, tags 4, category
  and publisher 2, description 1, as FTS5's ``bm25()`` computes them), then the id.
* Sets of documents are Python integers used as bitsets (bit ``n`` = slot ``n``): matching, the common
  filters and facet counts over every match are a few big-integer operations instead of a pass over each
  matching document. A posting stays a small ``set`` of slots until it is common enough for a bitset.
* Results are cached per query and filter until the next change to the index.
"""

from __future__ import annotations

import bisect
import heapq
import math
import operator
import re
import sys
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from services.catalog.adapters.documents import KIND_EXTENSION, extension_to_body
from services.catalog.domain.model import Extension
from services.catalog.search import FACET_FIELDS, FacetValue, SearchHits
from services.platform.query.predicate import (
    COMPARISONS,
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
    same_json_kind,
)

__all__ = ["MAX_FACET_VALUES", "MAX_TERMS", "MemorySearchIndex", "query_terms", "tokenize"]

MAX_TERMS = 16
MAX_FACET_VALUES = 50
_K1 = 1.2
_B = 0.75
_NAME, _TAGS, _OTHER = 0, 1, 2
# (field, BM25 weight, tier group); integer weights keep per-document frequencies small shared ints
_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("extension_id", 10, _NAME),
    ("display_name", 10, _NAME),
    ("tags", 4, _TAGS),
    ("description", 1, _OTHER),
    ("category", 2, _OTHER),
    ("publisher", 2, _OTHER),
)
_WORD = re.compile(r"[^\W_]+")
_DENSE_AT = 32  # a posting with more slots than this becomes a bitset
_MAX_CACHED_PARTS = 1024  # query words and filters kept between changes (each holds a few bitsets)
_EXPAND_SCAN_AT = 4  # a prefix with more words than this is scored by scanning each document's words
_BIT = tuple(1 << i for i in range(8))
_ONE = re.compile("1")
_MISSING: Any = object()
# The stored body's top-level fields: per-document filters read the same names from an Extension.
_BODY_FIELDS = frozenset(extension_to_body(Extension(extension_id="x", display_name="x")))


def tokenize(text: str) -> list[str]:
    """The index words of ``text``: letters and digits, lower case, accents removed."""
    folded = text.casefold()
    if not folded.isascii():
        folded = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return _WORD.findall(folded)


def query_terms(text: str) -> tuple[str, ...]:
    """The distinct words of a query (at most :data:`MAX_TERMS`), in a canonical order."""
    return tuple(sorted(set(tokenize(text)[:MAX_TERMS])))


def _bits_of(slots: Iterable[int]) -> int:
    buffer = bytearray()
    for slot in slots:
        index = slot >> 3
        if index >= len(buffer):
            buffer.extend(bytes(index + 1 - len(buffer)))
        buffer[index] |= _BIT[slot & 7]
    return int.from_bytes(buffer, "little")


def _slots_of(bits: int) -> list[int]:
    """The set bits of ``bits``, ascending."""
    if bits.bit_count() <= 16:
        out: list[int] = []
        while bits:
            low = bits & -bits
            out.append(low.bit_length() - 1)
            bits ^= low
        return out
    return [match.start() for match in _ONE.finditer(bin(bits)[:1:-1])]


def _without(posting: tuple[int, ...] | int, slot: int) -> tuple[int, ...] | int:
    if isinstance(posting, int):
        return posting & ~(1 << slot)
    return tuple(s for s in posting if s != slot)


class _Postings:
    """key → the slots that have it: a small tuple while rare, a bitset once common (tuples of ints and
    ints are objects the cyclic garbage collector does not have to visit)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[str, tuple[int, ...] | int] = {}

    def add(self, key: str, slot: int) -> bool:
        """Adds ``slot`` under ``key``; True when the key is new."""
        current = self.items.get(key)
        if current is None:
            self.items[key] = (slot,)
            return True
        if isinstance(current, int):
            self.items[key] = current | (1 << slot)
        elif slot not in current:
            self.items[key] = _bits_of((*current, slot)) if len(current) >= _DENSE_AT else (*current, slot)
        return False

    def discard(self, key: str, slot: int) -> bool:
        """Removes ``slot`` from ``key``; True when the key is gone."""
        current = self.items.get(key)
        if current is None:
            return False
        remaining = _without(current, slot)
        if remaining:
            self.items[key] = remaining
            return False
        del self.items[key]
        return True

    def bits(self, key: str) -> int:
        """The slots under ``key`` as a bitset."""
        current = self.items.get(key)
        if current is None:
            return 0
        return current if isinstance(current, int) else _bits_of(current)


class _Union:
    """Accumulates the union of postings (sparse ones into a byte buffer, dense ones with OR)."""

    __slots__ = ("buffer", "dense")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.dense = 0

    def add(self, posting: tuple[int, ...] | int | None) -> None:
        if posting is None:
            return
        if isinstance(posting, int):
            self.dense |= posting
            return
        buffer = self.buffer
        for slot in posting:
            index = slot >> 3
            if index >= len(buffer):
                buffer.extend(bytes(index + 1 - len(buffer)))
            buffer[index] |= _BIT[slot & 7]

    def bits(self) -> int:
        return self.dense | int.from_bytes(self.buffer, "little")


@dataclass(frozen=True, slots=True)
class _Term:
    prefix: str
    words: tuple[str, ...]  # the vocabulary words that start with the prefix
    idf: float
    groups: tuple[int, int, int]  # bitsets: matches in id/display name, in tags, anywhere


@dataclass(slots=True)
class _Result:
    total: int
    facets: dict[str, tuple[tuple[str, int], ...]]  # plain tuples: no objects for the collector to visit
    tiers: list[int]  # bitsets of the matches per tier, best first
    terms: tuple[_Term, ...]
    ranked: list[int] = field(default_factory=list)  # slots in rank order, for the tiers done so far
    next_tier: int = 0


def _values_of(extension: Extension, name: str) -> Iterable[str]:
    """The exact values of a facet (or ``state``) field: one, or each distinct tag."""
    if name == "tags":
        return set(extension.tags)
    if name == "state":
        return (extension.state.value,)
    value: str = getattr(extension, name)
    return (value,)


def _group_words(extension: Extension) -> tuple[list[str], list[str], list[str], dict[str, int], int]:
    groups: tuple[list[str], list[str], list[str]] = ([], [], [])
    weights: dict[str, int] = {}
    length = 0
    for name, weight, group in _FIELDS:
        value = getattr(extension, name)
        # interned: every document that has a word shares one string for it
        words = [sys.intern(word) for word in tokenize(" ".join(value) if isinstance(value, tuple) else value)]
        length += len(words)
        groups[group].extend(words)
        for word in words:
            weights[word] = weights.get(word, 0) + weight
    return groups[0], groups[1], groups[2], weights, length


class MemorySearchIndex:
    """Ranks extensions for a free-text query with facets over every match (see the module docstring).

    It holds every extension it is given, whatever its state: the caller's filter decides (the catalog
    asks for ``state = ACTIVE``). Methods are synchronous and never wait, so each call sees one
    consistent index on the event loop.
    """

    def __init__(self, *, cache_entries: int = 256) -> None:
        # by slot: the extension, its words' BM25-weighted frequencies over every field, its word count
        self._extensions: list[Extension | None] = []
        self._weights: list[dict[str, int]] = []
        self._lengths: list[int] = []
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._all = 0
        self._total_length = 0
        self._words = (_Postings(), _Postings(), _Postings())  # by tier group
        self._vocabulary: list[str] = []  # sorted words present in any group
        self._word_refs: dict[str, int] = {}  # word → how many groups hold it
        self._values = {name: _Postings() for name in (*FACET_FIELDS, "state")}
        self._cache_entries = cache_entries
        self._generation = 0
        self._terms: dict[str, _Term] = {}
        self._filters: dict[Predicate, int] = {}
        self._results: OrderedDict[tuple[tuple[str, ...], Predicate | None], _Result] = OrderedDict()
        self._by_id: list[int] | None = None

    # -- content ---------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Grows by one on every change."""
        return self._generation

    def __len__(self) -> int:
        return len(self._slot_of)

    def get(self, extension_id: str) -> Extension | None:
        """The indexed copy of an extension, or None."""
        slot = self._slot_of.get(extension_id)
        return None if slot is None else self._extensions[slot]

    def extension_ids(self) -> list[str]:
        """Every indexed extension id."""
        return list(self._slot_of)

    def put(self, extension: Extension) -> bool:
        """Indexes ``extension`` (replacing its previous copy); False when that copy has the same etag."""
        slot = self._slot_of.get(extension.extension_id)
        if slot is not None:
            old = self._extensions[slot]
            assert old is not None
            if extension.etag and old.etag == extension.etag:
                return False
            self._unindex(slot, old)
        else:
            slot = heapq.heappop(self._free) if self._free else len(self._extensions)
            if slot == len(self._extensions):
                self._extensions.append(None)
                self._weights.append({})
                self._lengths.append(0)
            self._slot_of[extension.extension_id] = slot
        self._index(slot, extension)
        self._changed()
        return True

    def remove(self, extension_id: str) -> bool:
        """Drops an extension from the index; False when it was not there."""
        slot = self._slot_of.pop(extension_id, None)
        if slot is None:
            return False
        old = self._extensions[slot]
        assert old is not None
        self._unindex(slot, old)
        self._extensions[slot] = None
        self._weights[slot] = {}
        self._lengths[slot] = 0
        heapq.heappush(self._free, slot)
        self._changed()
        return True

    def _index(self, slot: int, extension: Extension) -> None:
        name_words, tag_words, other_words, weights, length = _group_words(extension)
        for group, words in zip(self._words, (name_words, tag_words, other_words), strict=True):
            for word in set(words):
                if group.add(word, slot):
                    refs = self._word_refs.get(word, 0)
                    if refs == 0:
                        bisect.insort(self._vocabulary, word)
                    self._word_refs[word] = refs + 1
        for name, postings in self._values.items():
            for value in _values_of(extension, name):
                postings.add(value, slot)
        self._extensions[slot] = extension
        self._weights[slot] = weights
        self._lengths[slot] = length
        self._all |= 1 << slot
        self._total_length += length

    def _unindex(self, slot: int, extension: Extension) -> None:
        name_words, tag_words, other_words, _, _ = _group_words(extension)
        for group, words in zip(self._words, (name_words, tag_words, other_words), strict=True):
            for word in set(words):
                if group.discard(word, slot):
                    refs = self._word_refs[word] - 1
                    if refs:
                        self._word_refs[word] = refs
                    else:
                        del self._word_refs[word]
                        del self._vocabulary[bisect.bisect_left(self._vocabulary, word)]
        for name, postings in self._values.items():
            for value in _values_of(extension, name):
                postings.discard(value, slot)
        self._all &= ~(1 << slot)
        self._total_length -= self._lengths[slot]

    def _changed(self) -> None:
        self._generation += 1
        self._terms.clear()
        self._filters.clear()
        self._results.clear()
        self._by_id = None

    # -- search ----------------------------------------------------------------------------------------

    async def search(self, text: str, *, where: Predicate | None, limit: int, offset: int) -> SearchHits:
        """One ranked page, the number of matches and the facets over all of them (computed without
        waiting: the page is consistent with one generation of the index)."""
        key = (query_terms(text), where)
        result = self._results.get(key)
        if result is None:
            result = self._evaluate(*key)
            if self._cache_entries:
                self._results[key] = result
                if len(self._results) > self._cache_entries:
                    self._results.popitem(last=False)
        else:
            self._results.move_to_end(key)
        wanted = offset + limit
        while len(result.ranked) < wanted and result.next_tier < len(result.tiers):
            result.ranked.extend(self._rank(result.tiers[result.next_tier], result.terms))
            result.next_tier += 1
        page = []
        for slot in result.ranked[offset:wanted]:
            extension = self._extensions[slot]
            assert extension is not None
            page.append(extension)
        facets = {name: [FacetValue(value, n) for value, n in values] for name, values in result.facets.items()}
        return SearchHits(page, result.total, facets)

    def _evaluate(self, words: tuple[str, ...], where: Predicate | None) -> _Result:
        allowed = self._all if where is None else self._filter(where)
        if not words:
            return _Result(allowed.bit_count(), self._facets(allowed), [allowed], ())
        terms = tuple(self._term(word) for word in words)
        best = tags_or_better = matched = allowed
        for term in terms:
            name, tags, anywhere = term.groups
            best &= name
            tags_or_better &= name | tags
            matched &= anywhere
        tiers = [best, tags_or_better & ~best, matched & ~tags_or_better]
        return _Result(matched.bit_count(), self._facets(matched), tiers, terms)

    def _term(self, prefix: str) -> _Term:
        term = self._terms.get(prefix)
        if term is not None:
            return term
        vocabulary = self._vocabulary
        start = bisect.bisect_left(vocabulary, prefix)
        end = bisect.bisect_left(vocabulary, prefix + "\U0010ffff", start)
        words = tuple(vocabulary[start:end])
        unions = (_Union(), _Union(), _Union())
        for group, union in zip(self._words, unions, strict=True):
            items = group.items
            for word in words:
                union.add(items.get(word))
        name, tags, other = (union.bits() for union in unions)
        anywhere = name | tags | other
        documents = len(self._slot_of)
        hits = anywhere.bit_count()
        idf = math.log((documents - hits + 0.5) / (hits + 0.5)) if documents else 0.0
        term = _Term(prefix, words, idf if idf > 0 else 1e-6, (name, tags, anywhere))
        if len(self._terms) >= _MAX_CACHED_PARTS:
            self._terms.clear()
        self._terms[prefix] = term
        return term

    def _rank(self, bits: int, terms: tuple[_Term, ...]) -> list[int]:
        if not terms:
            by_id = self._ids_in_order()
            data = bits.to_bytes((bits.bit_length() + 7) >> 3, "little")
            size = len(data)
            return [s for s in by_id if (s >> 3) < size and data[s >> 3] >> (s & 7) & 1]
        average = self._total_length / max(len(self._slot_of), 1) or 1.0
        base, scale = _K1 * (1 - _B), _K1 * _B / average
        # BM25 without its constant factor (k1 + 1), which does not change the order
        plan = [(t.idf, t.words if len(t.words) <= _EXPAND_SCAN_AT else None, t.prefix) for t in terms]
        scored: list[tuple[float, str, int]] = []
        append = scored.append
        extensions, weights_of, lengths = self._extensions, self._weights, self._lengths
        for slot in _slots_of(bits):
            weights = weights_of[slot]
            norm = base + scale * lengths[slot]
            score = 0.0
            for idf, words, prefix in plan:
                if words is None:
                    frequency = sum(w for word, w in weights.items() if word.startswith(prefix))
                elif len(words) == 1:
                    frequency = weights.get(words[0], 0)
                else:
                    frequency = sum(weights.get(word, 0) for word in words)
                if frequency:
                    score -= idf * frequency / (frequency + norm)
            extension = extensions[slot]
            assert extension is not None
            append((score, extension.extension_id, slot))
        scored.sort()
        return [slot for _, _, slot in scored]

    def _ids_in_order(self) -> list[int]:
        if self._by_id is None:
            self._by_id = [slot for _, slot in sorted(self._slot_of.items())]
        return self._by_id

    def _facets(self, matched: int) -> dict[str, tuple[tuple[str, int], ...]]:
        count = matched.bit_count()
        data = matched.to_bytes((matched.bit_length() + 7) >> 3, "little")
        size = len(data)
        slots: list[int] | None = None
        facets: dict[str, tuple[tuple[str, int], ...]] = {}
        for name in FACET_FIELDS:
            postings = self._values[name].items
            counts: dict[str, int] | Counter[str]
            if count * (4 if name == "tags" else 1) < len(postings):
                # few matches, many values: count the matches' values
                if slots is None:
                    slots = _slots_of(matched)
                counts = Counter()
                for slot in slots:
                    extension = self._extensions[slot]
                    assert extension is not None
                    counts.update(_values_of(extension, name))
            else:
                counts = {}
                for value, posting in postings.items():
                    if isinstance(posting, int):
                        counts[value] = (posting & matched).bit_count()
                    else:
                        counts[value] = sum(1 for s in posting if (s >> 3) < size and data[s >> 3] >> (s & 7) & 1)
            if name != "tags":
                counts.pop("", None)
            ordered = sorted(((-n, value) for value, n in counts.items() if n), key=operator.itemgetter(0, 1))
            facets[name] = tuple((value, -n) for n, value in ordered[:MAX_FACET_VALUES])
        return facets

    async def close(self) -> None:
        """Nothing to release (the feed that fills the index is stopped by its owner)."""

    # -- filters ---------------------------------------------------------------------------------------

    def _filter(self, predicate: Predicate) -> int:
        cached = self._filters.get(predicate)
        if cached is None:
            if len(self._filters) >= _MAX_CACHED_PARTS:
                self._filters.clear()
            cached = self._filters[predicate] = self._filter_bits(predicate)
        return cached

    def _filter_bits(self, p: Predicate) -> int:
        if isinstance(p, Compare) and p.op is Op.EQ and type(p.value) is str and len(p.path) == 1:
            name = p.path[0]
            if name in self._values and name != "tags":
                return self._values[name].bits(p.value)
        if isinstance(p, ArrayContains) and p.path == ("tags",) and type(p.value) is str:
            return self._values["tags"].bits(p.value)
        if isinstance(p, And):
            bits = self._all
            for item in p.items:
                if not bits:
                    break
                bits &= self._filter_bits(item)
            return bits
        if isinstance(p, Or):
            bits = 0
            for item in p.items:
                bits |= self._filter_bits(item)
            return bits & self._all
        if isinstance(p, Not):
            return self._all & ~self._filter_bits(p.item)
        test = _document_test(p)
        slots = []
        for slot, extension in enumerate(self._extensions):
            if extension is not None and test(extension):
                slots.append(slot)
        return _bits_of(slots)


# -- the predicate semantics of services.platform.query.predicate, on one extension ---------------------


def _value_at(extension: Extension, path: tuple[str, ...]) -> Any:
    head = path[0]
    if head == "kind":
        value: Any = KIND_EXTENSION
    elif head in _BODY_FIELDS:
        value = getattr(extension, head)
        if head == "state":
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
    else:
        return _MISSING
    for segment in path[1:]:
        if not isinstance(value, dict) or segment not in value:
            return _MISSING
        value = value[segment]
    return value


def _document_test(p: Predicate) -> Callable[[Extension], bool]:
    if isinstance(p, Compare):
        compare, path, wanted = COMPARISONS[p.op], p.path, p.value

        def test_compare(e: Extension) -> bool:
            v = _value_at(e, path)
            return v is not _MISSING and v is not None and same_json_kind(v, wanted) and compare(v, wanted)

        return test_compare
    if isinstance(p, Prefix):
        prefix_path, prefix = p.path, p.prefix

        def test_prefix(e: Extension) -> bool:
            v = _value_at(e, prefix_path)
            return isinstance(v, str) and v.startswith(prefix)

        return test_prefix
    if isinstance(p, ArrayContains):
        array_path, element = p.path, p.value

        def test_contains(e: Extension) -> bool:
            v = _value_at(e, array_path)
            return isinstance(v, list) and any(same_json_kind(x, element) and x == element for x in v)

        return test_contains
    if isinstance(p, MapHasKey):
        map_path, key = p.path, p.key

        def test_key(e: Extension) -> bool:
            v = _value_at(e, map_path)
            return isinstance(v, dict) and key in v

        return test_key
    if isinstance(p, Exists):
        exists_path = p.path
        return lambda e: _value_at(e, exists_path) is not _MISSING
    if isinstance(p, And):
        tests = [_document_test(item) for item in p.items]
        return lambda e: all(t(e) for t in tests)
    if isinstance(p, Or):
        tests = [_document_test(item) for item in p.items]
        return lambda e: any(t(e) for t in tests)
    if isinstance(p, Not):
        inner = _document_test(p.item)
        return lambda e: not inner(e)
    raise TypeError(f"unknown predicate {p!r}")
