"""The in-memory search index: tokens, tiered ranking, facets over every match, filters, and its upkeep.

Filters are checked against the SQLite document store's own compiler on the same documents, and the
index's sets and facets against a brute-force recount after random changes.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from services.catalog.adapters.documents import COLLECTION, EXTENSION_DOC_ID, extension_to_body
from services.catalog.adapters.memory_search import MAX_FACET_VALUES, MemorySearchIndex, query_terms, tokenize
from services.catalog.domain.model import Extension, ExtensionState
from services.catalog.handlers.schemas import EXTENSION_FILTER
from services.platform.docstore.port import Query
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.query.filter import parse_filter
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

ACTIVE = Compare(("state",), Op.EQ, "ACTIVE")


def ext(extension_id: str, display_name: str = "", *, etag: str = "", **fields: object) -> Extension:
    values: dict[str, object] = {
        "display_name": display_name or extension_id,
        "publisher": "Acme",
        "create_time": "2026-01-01T00:00:00.000000Z",
        "update_time": "2026-01-01T00:00:00.000000Z",
    }
    values.update(fields)
    return Extension(extension_id=extension_id, etag=etag or f"etag-{extension_id}", **values)  # type: ignore[arg-type]


async def ids(index: MemorySearchIndex, text: str, where: Predicate | None = ACTIVE, limit: int = 1000) -> list[str]:
    hits = await index.search(text, where=where, limit=limit, offset=0)
    return [e.extension_id for e in hits.extensions]


def test_tokenize_folds_case_and_accents_and_splits_on_punctuation() -> None:
    assert tokenize("Crème-Brûlée OCR_v2 naïve 日本 x") == ["creme", "brulee", "ocr", "v2", "naive", "日本", "x"]
    assert query_terms('" OR 1=1 -- ; photo photo Photo') == ("1", "or", "photo")
    assert query_terms("   ;; ") == ()


async def test_tiers_id_and_display_name_then_tags_then_the_rest() -> None:
    index = MemorySearchIndex()
    index.put(ext("archiver", "Archiver", description="keeps every photo safe", tags=("zip",)))
    index.put(ext("gallery", "Gallery", tags=("photo", "album")))
    index.put(ext("photo-booth", "Booth"))  # a match in the id counts like the display name
    index.put(ext("snap", "Photo Snap"))
    index.put(ext("lens", "Lens", category="photography"))  # prefix match in the category: tier 2
    index.put(ext("calculator", "Calculator"))
    # in tier 2 the category (weight 2) outweighs the description (weight 1)
    assert await ids(index, "photo") == ["photo-booth", "snap", "gallery", "lens", "archiver"]
    assert await ids(index, "PHOT") == await ids(index, "photo")  # every word is a prefix
    assert await ids(index, "photo nothing-like-this") == []


async def test_a_documents_tier_is_set_by_its_weakest_word() -> None:
    index = MemorySearchIndex()
    index.put(ext("one", "Photo Editor"))  # both words in the display name: tier 0
    index.put(ext("two", "Photo", tags=("editor",)))  # weakest word in the tags: tier 1
    index.put(ext("three", "Photo", description="an editor"))  # weakest word in the description: tier 2
    index.put(ext("four", "Editor", description="for every photo", tags=("photo",)))  # tier 1
    ranked = await ids(index, "editor photo")
    assert ranked[0] == "one" and set(ranked[1:3]) == {"two", "four"} and ranked[3] == "three"


async def test_bm25_orders_within_a_tier_then_the_id_breaks_ties() -> None:
    index = MemorySearchIndex()
    index.put(ext("b-long", "Resize", description=" ".join(["filler"] * 40)))
    index.put(ext("a-short", "Resize"))
    index.put(ext("c-twice", "Resize Resize"))
    index.put(ext("d-same", "Resize"))
    # more occurrences rank first; a longer document ranks lower; equal scores fall back to the id
    assert await ids(index, "resize") == ["c-twice", "a-short", "d-same", "b-long"]


async def test_rarer_words_weigh_more_across_several_words() -> None:
    index = MemorySearchIndex()
    for n in range(20):
        index.put(ext(f"common-{n:02d}", "Image Tool", description="rare" if n == 0 else ""))
    index.put(ext("x-rare", "Image", description="rare rare rare"))
    # both in tier 2 for "rare": the document with more of the rare word ranks first
    assert (await ids(index, "image rare"))[:2] == ["x-rare", "common-00"]


async def test_paging_total_and_facets_cover_every_match() -> None:
    index = MemorySearchIndex()
    categories = ["media", "media", "media", "tools", "", "docs"]
    for n, category in enumerate(categories):
        index.put(ext(f"photo-{n}", "Photo", category=category, publisher=["Acme", "Zed"][n % 2], tags=("a", "b")))
    index.put(ext("other", "Other", category="media"))
    pages: list[str] = []
    offset = 0
    while True:
        hits = await index.search("photo", where=ACTIVE, limit=4, offset=offset)
        assert hits.total_size == 6
        assert hits.facets["category"][0].value == "media" and hits.facets["category"][0].count == 3
        assert {v.value: v.count for v in hits.facets["category"]} == {"media": 3, "tools": 1, "docs": 1}
        assert {v.value: v.count for v in hits.facets["publisher"]} == {"Acme": 3, "Zed": 3}
        assert {v.value: v.count for v in hits.facets["tags"]} == {"a": 6, "b": 6}
        pages.extend(e.extension_id for e in hits.extensions)
        offset += len(hits.extensions)
        if offset >= hits.total_size:
            break
    assert pages == await ids(index, "photo")
    assert sorted(pages) == [f"photo-{n}" for n in range(6)]


async def test_facets_are_ordered_by_count_then_value_and_capped() -> None:
    index = MemorySearchIndex()
    for n in range(MAX_FACET_VALUES + 10):
        tags = tuple(f"tag-{m:03d}" for m in range(n % 7 + 1))
        index.put(ext(f"e-{n:03d}", "Widget", tags=(*tags, f"only-{n:03d}")))
    hits = await index.search("widget", where=ACTIVE, limit=1, offset=0)
    values = [(v.value, v.count) for v in hits.facets["tags"]]
    assert len(values) == MAX_FACET_VALUES
    assert values == sorted(values, key=lambda vc: (-vc[1], vc[0]))
    assert values[0] == ("tag-000", MAX_FACET_VALUES + 10)
    # one match among many values: counted from the match itself, same answer
    just_one = And((ACTIVE, Compare(("extension_id",), Op.EQ, "e-005")))
    one = await index.search("widget", where=just_one, limit=1, offset=0)
    assert [(v.value, v.count) for v in one.facets["tags"]] == [
        ("only-005", 1),
        *((f"tag-{m:03d}", 1) for m in range(5 % 7 + 1)),
    ]


async def test_deleted_extensions_are_hidden_by_the_state_filter_only() -> None:
    index = MemorySearchIndex()
    index.put(ext("gone", "Photo", state=ExtensionState.DELETED))
    index.put(ext("here", "Photo"))
    assert await ids(index, "photo") == ["here"]
    assert await ids(index, "photo", where=None) == ["gone", "here"]
    assert await ids(index, "photo", where=Compare(("state",), Op.EQ, "DELETED")) == ["gone"]
    hits = await index.search("photo", where=ACTIVE, limit=10, offset=0)
    assert hits.total_size == 1 and {v.value for v in hits.facets["publisher"]} == {"Acme"}


async def test_changes_show_at_once_and_the_same_etag_is_a_no_op() -> None:
    index = MemorySearchIndex()
    assert index.put(ext("a", "Photo", etag="1"))
    assert index.put(ext("b", "Photo Photo", etag="1"))
    assert await ids(index, "photo") == ["b", "a"]
    generation = index.generation
    assert not index.put(ext("a", "Changed but same etag", etag="1"))
    assert index.generation == generation
    assert index.put(ext("a", "Photo Photo Photo", etag="2"))
    assert await ids(index, "photo") == ["a", "b"]
    assert index.put(ext("b", "Camera", etag="2"))
    assert await ids(index, "photo") == ["a"]
    assert await ids(index, "camera") == ["b"]
    assert index.remove("a") and not index.remove("a")
    assert await ids(index, "photo") == [] and len(index) == 1
    index.put(ext("c", "Photo"))  # reuses the freed slot
    assert await ids(index, "photo") == ["c"] and index.get("c") is not None and index.get("a") is None


async def test_empty_query_lists_every_match_by_id() -> None:
    index = MemorySearchIndex()
    for name in ["m", "c", "x", "a"]:
        index.put(ext(name, "Thing", category="tools" if name != "x" else "media"))
    assert await ids(index, "") == ["a", "c", "m", "x"]
    assert await ids(index, "", where=And((ACTIVE, Compare(("category",), Op.EQ, "tools")))) == ["a", "c", "m"]


def _random_extension(rng: random.Random, n: int, words: list[str]) -> Extension:
    return ext(
        f"ext-{n:03d}",
        " ".join(rng.sample(words, rng.randint(1, 3))).title(),
        etag=f"{n}-{rng.random()}",
        description=" ".join(rng.choices(words, k=rng.randint(0, 8))),
        category=rng.choice(["media", "tools", "", "Media"]),
        subcategory=rng.choice(["", "video", "audio"]),
        publisher=rng.choice(["Acme", "Zed", "Ünïcode Ltd", "' OR 1=1 --"]),
        tags=tuple(rng.sample(words, rng.randint(0, 3))),
        labels=rng.choice([{}, {"env": "prod"}, {"env": "dev", "team": "x"}, {"app.kubernetes.io-name": "web"}]),
        state=rng.choice([ExtensionState.ACTIVE, ExtensionState.ACTIVE, ExtensionState.DELETED]),
        create_time=f"2026-01-{rng.randint(1, 28):02d}T12:00:00.000000Z",
    )


FILTERS = [
    'category = "media"',
    'category != "media"',
    'category = "Media" OR publisher = "Zed"',
    'NOT category = "media"',
    'publisher = "\' OR 1=1 --"',
    'publisher > "B"',
    'subcategory = "video" AND tags:"photo"',
    'tags:"photo" OR tags:"video"',
    "-tags:photo",
    "labels:env",
    'labels.env = "prod"',
    'labels.env != "prod"',
    "labels.env:*",
    'labels.app.kubernetes.io-name = "web"',
    'create_time > "2026-01-15T00:00:00Z"',
    'create_time <= "2026-01-10T12:00:00Z" AND state = ACTIVE',
    'display_name = "Photo*"',
    'display_name = "photo*"',
    "state = DELETED",
    "state != DELETED",
    'category = "nothing"',
]
RAW: list[Predicate] = [
    Exists(("labels", "team")),
    MapHasKey(("labels",), "team"),
    Prefix(("publisher",), "Ün"),
    ArrayContains(("tags",), 3),
    Compare(("category",), Op.EQ, 3),
    Compare(("kind",), Op.EQ, "extension"),
    Or(()),
    And(()),
    Not(Or((Compare(("category",), Op.EQ, "media"), Exists(("nope",))))),
]


async def test_filters_select_what_the_sqlite_compiler_selects(tmp_path: Path) -> None:
    rng = random.Random(7)
    words = ["photo", "video", "audio", "resize", "crème", "tax", "ocr", "chart"]
    extensions = [_random_extension(rng, n, words) for n in range(120)]
    store = await SqliteDocumentStore.open(tmp_path / "catalog.sqlite3")
    try:
        collection = store.collection(COLLECTION)
        index = MemorySearchIndex()
        for extension in extensions:
            await collection.create(extension.extension_id, EXTENSION_DOC_ID, extension_to_body(extension))
            index.put(extension)
        predicates = [parse_filter(text, EXTENSION_FILTER) for text in FILTERS]
        for predicate in [*predicates, *RAW]:
            assert predicate is not None
            page = await collection.query(
                Query(where=And((Compare(("kind",), Op.EQ, "extension"), predicate)), limit=1000)
            )
            expected = sorted(d.partition for d in page.documents)
            assert await ids(index, "", where=predicate) == expected, predicate
    finally:
        await store.close()


def _reference(extensions: dict[str, Extension], words: tuple[str, ...]) -> tuple[set[str], dict[str, Counter[str]]]:
    matched = set()
    for extension in extensions.values():
        if extension.state is not ExtensionState.ACTIVE:
            continue
        fields = [extension.extension_id, extension.display_name, " ".join(extension.tags)]
        fields += [extension.description, extension.category, extension.publisher]
        tokens = {t for text in fields for t in tokenize(text)}
        if all(any(t.startswith(w) for t in tokens) for w in words):
            matched.add(extension.extension_id)
    facets: dict[str, Counter[str]] = {"category": Counter(), "publisher": Counter(), "tags": Counter()}
    for extension_id in matched:
        extension = extensions[extension_id]
        if extension.category:
            facets["category"][extension.category] += 1
        if extension.publisher:
            facets["publisher"][extension.publisher] += 1
        facets["tags"].update(set(extension.tags))
    return matched, facets


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_changes_keep_matches_and_facets_exact(seed: int) -> None:
    # few words and many documents: postings grow past the dense threshold and shrink back
    rng = random.Random(seed)
    words = ["photo", "photos", "video", "pdf", "ocr", "tax", "résumé", "map"]
    index = MemorySearchIndex(cache_entries=8)
    live: dict[str, Extension] = {}
    queries = ["", "photo", "phot", "video ocr", "p", "resume", "map tax photo", "zzz"]
    for step in range(600):
        n = rng.randrange(150)
        extension_id = f"ext-{n:03d}"
        if extension_id in live and rng.random() < 0.3:
            assert index.remove(extension_id)
            del live[extension_id]
        else:
            live[extension_id] = _random_extension(rng, n, words)
            index.put(live[extension_id])
        if step % 50 == 49:
            for text in queries:
                expected, facets = _reference(live, query_terms(text))
                hits = await index.search(text, where=ACTIVE, limit=1000, offset=0)
                assert sorted(e.extension_id for e in hits.extensions) == sorted(expected), text
                assert hits.total_size == len(expected)
                for name, counter in facets.items():
                    top = sorted(counter.items(), key=lambda vc: (-vc[1], vc[0]))[:MAX_FACET_VALUES]
                    assert [(v.value, v.count) for v in hits.facets[name]] == top, (text, name)
                again = await index.search(text, where=ACTIVE, limit=1000, offset=0)  # from the cache
                assert [e.extension_id for e in again.extensions] == [e.extension_id for e in hits.extensions]
    assert len(index) == len(live)


async def test_caches_stay_bounded_under_a_stream_of_distinct_queries_and_filters() -> None:
    index = MemorySearchIndex(cache_entries=16)
    index.put(ext("a", "Alpha"))
    for n in range(3000):
        where = And((ACTIVE, Compare(("create_time",), Op.GT, f"2025-{n:06d}")))
        hits = await index.search(f"nothing{n}", where=where, limit=10, offset=0)
        assert hits.total_size == 0
    # white-box: the per-word and per-filter parts are capped between changes, like the results
    assert len(index._terms) <= 1024 and len(index._filters) <= 1024 and len(index._results) <= 16
