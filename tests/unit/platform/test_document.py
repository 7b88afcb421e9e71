"""Document: immutable, compared by value, and built from stored JSON text without parsing it until used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.platform.docstore.port import Document
from services.platform.docstore.sqlite import SqliteDocumentStore


def test_a_document_from_json_equals_one_built_from_its_body() -> None:
    text = json.dumps({"a": [1, {"b": None}]})
    lazy = Document.from_json("id", "p", text, "e1")
    assert lazy == Document("id", "p", {"a": [1, {"b": None}]}, "e1")
    assert lazy != Document("id", "p", {"a": [1, {"b": None}]}, "e2")
    assert lazy.body is lazy.body  # parsed once, then the same object
    assert repr(lazy) == "Document(id='id', partition='p', body={'a': [1, {'b': None}]}, etag='e1')"


def test_the_text_is_parsed_only_when_the_body_is_used() -> None:
    document = Document.from_json("id", "p", "not json", "e1")
    assert (document.id, document.partition, document.etag) == ("id", "p", "e1")
    with pytest.raises(ValueError):
        _ = document.body
    with pytest.raises(TypeError):
        _ = Document.from_json("id", "p", "[1]", "e1").body


def test_a_document_is_immutable_and_unhashable() -> None:
    document = Document("id", "p", {}, "e1")
    with pytest.raises(AttributeError):
        document.etag = "e2"
    with pytest.raises(AttributeError):
        del document.id
    with pytest.raises(TypeError):
        hash(document)


async def test_sqlite_writes_do_not_parse_back_what_they_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await SqliteDocumentStore.open(tmp_path / "store.db")
    try:
        collection = store.collection("things")
        parsed: list[str] = []
        original = json.loads

        def counting(text: Any, *args: Any, **kwargs: Any) -> Any:
            parsed.append(text)
            return original(text, *args, **kwargs)

        monkeypatch.setattr(json, "loads", counting)
        created = await collection.create("p", "a", {"n": 1})
        replaced = await collection.replace("p", "a", {"n": 2}, if_match=created.etag)
        assert parsed == []
        assert replaced.body == {"n": 2}
        assert len(parsed) == 1
        replaced.body["n"] = 3  # the holder's own object: the store is unchanged
        assert (await collection.read("p", "a")) == Document("a", "p", {"n": 2}, replaced.etag)
    finally:
        await store.close()
