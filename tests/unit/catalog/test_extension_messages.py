"""Search responses built from cached, wire-format extension messages equal those built field by field."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import timestamp_pb2

from exthub.catalog.v1 import catalog_service_pb2 as pb
from services.catalog.domain.model import Extension, ExtensionState
from services.catalog.mapping import ExtensionMessages, extension_to_proto
from services.platform.timefmt import from_storage

FIELD = pb.SearchExtensionsResponse.DESCRIPTOR.fields_by_name["extensions"]


def ext(n: int, **fields: object) -> Extension:
    values: dict[str, object] = {
        "display_name": f"Extension {n} " + "long " * n,  # lengths cross the one-byte varint boundary
        "publisher": "Acme",
        "tags": ("a", "b"),
        "labels": {"tier": "free"},
        "create_time": "2026-01-01T00:00:00.000000Z",
        "update_time": "2026-01-02T00:00:00.000000Z",
        "etag": f"etag-{n}",
    }
    values.update(fields)
    return Extension(extension_id=f"ext-{n}", **values)  # type: ignore[arg-type]


def test_pages_equal_field_by_field_conversion_in_order() -> None:
    messages = ExtensionMessages(FIELD, entries=3)
    page = [ext(n) for n in (5, 1, 40, 2)]
    for _ in range(2):  # built, then from the cache
        response = pb.SearchExtensionsResponse(total_size=4, next_page_token="t")
        messages.merge_into(response, page)
        expected = pb.SearchExtensionsResponse(
            extensions=[extension_to_proto(e) for e in page], total_size=4, next_page_token="t"
        )
        assert response == expected


def test_a_new_etag_is_a_new_message_and_the_empty_etag_is_never_cached() -> None:
    messages = ExtensionMessages(FIELD)
    old = ext(1)
    new = dataclasses.replace(old, display_name="Renamed", state=ExtensionState.DELETED, etag="etag-2")
    unsaved = dataclasses.replace(old, etag="")
    for page in ([old], [new], [unsaved, dataclasses.replace(unsaved, display_name="Other")]):
        response = pb.SearchExtensionsResponse()
        messages.merge_into(response, page)
        assert list(response.extensions) == [extension_to_proto(e) for e in page]


def test_only_a_repeated_extension_field_is_accepted() -> None:
    with pytest.raises(ValueError, match="not a repeated Extension field"):
        ExtensionMessages(pb.SearchExtensionsResponse.DESCRIPTOR.fields_by_name["facets"])


@pytest.mark.parametrize(
    "stored",
    [
        "2026-11-21T06:01:24.123456Z",
        "1970-01-01T00:00:00.000000Z",
        "1969-12-31T23:59:59.999999Z",
        "2000-02-29T12:00:00.000001Z",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_stored_times_become_the_same_timestamps_as_from_datetime(stored: str) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(from_storage(stored))
    message = extension_to_proto(ext(1, create_time=stored, update_time=stored, delete_time=stored))
    assert message.create_time == message.update_time == message.delete_time == expected
