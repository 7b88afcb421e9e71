"""The http-json request body: members, determinism, integers, accessors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from exthub.contract.extension_request import build_request_document, encode_body, resource_id
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2
from services.agent.json_values import json_integers


def _task() -> execution_pb2.ExecutionTask:
    task = execution_pb2.ExecutionTask(
        execution="executions/abc",
        attempt=2,
        extension="extensions/echo",
        extension_version="extensions/echo/versions/2.0.0-rc.1",
        profile="async",
        execution_model="http-json/async/v1",
        priority=types_pb2.HIGH,
        validate_only=True,
        labels={"b": "2", "a": "1"},
        tenant="t1",
        user="u1",
        status_url="https://hub/v1/executions/abc:reportStatus",
        status_update_key="k" * 43,
    )
    task.request.update({"size": 3, "ratio": 0.5, "deep": {"n": [1, 2.0, "x"]}, "big": 2.0**60})
    task.deadline.FromDatetime(datetime(2026, 11, 21, 6, 1, 24, 123456, tzinfo=UTC))
    source = task.inputs.add(provided=True)
    source.definition.CopyFrom(types_pb2.ObjectDefinition(name="source", type_name="image/png", required=True))
    source.accessor.CopyFrom(
        types_pb2.ObjectAccessor(
            uri="https://objects/source?sig=1",
            method="GET",
            headers={"x-ms-version": "2024"},
            expire_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
            access_mode=types_pb2.ObjectAccessor.READ_ONLY,
        )
    )
    task.inputs.add().definition.name = "optional"
    return task


def test_document_has_every_contract_member() -> None:
    document = build_request_document(_task(), {"config/v1": {"a": 1}})
    assert document == {
        "executionId": "abc",
        "extensionId": "echo",
        "extensionVersion": "2.0.0-rc.1",
        "profile": "async",
        "priority": "HIGH",
        "attempt": 2,
        "validateOnly": True,
        "requestParameters": {"size": 3, "ratio": 0.5, "deep": {"n": [1, 2, "x"]}, "big": 2.0**60},
        "labels": {"a": "1", "b": "2"},
        "executor": {"tenantId": "t1", "userId": "u1"},
        "inputs": {
            "source": {
                "definition": {
                    "name": "source",
                    "description": "",
                    "typeName": "image/png",
                    "typeUri": "",
                    "required": True,
                },
                "accessor": {
                    "uri": "https://objects/source?sig=1",
                    "method": "GET",
                    "headers": {"x-ms-version": "2024"},
                    "expireTime": "2027-01-15T08:00:00.000000Z",
                    "accessMode": "READ_ONLY",
                },
            },
            "optional": {
                "definition": {"name": "optional", "description": "", "typeName": "", "typeUri": "", "required": False},
                "accessor": None,
            },
        },
        "outputs": {},
        "services": {"config/v1": {"a": 1}},
        "deadline": "2026-11-21T06:01:24.123456Z",
        "statusUrl": "https://hub/v1/executions/abc:reportStatus",
        "statusUpdateKey": "k" * 43,
    }


def test_encoding_is_deterministic_and_compact() -> None:
    first = encode_body(build_request_document(_task(), {"z/v1": {}, "a/v1": {"y": 1, "x": 2}}))
    second = encode_body(build_request_document(_task(), {"a/v1": {"x": 2, "y": 1}, "z/v1": {}}))
    assert first == second
    assert b" " not in first.replace(b"image/png", b"")
    assert json.loads(first)["services"] == {"a/v1": {"x": 2, "y": 1}, "z/v1": {}}


def test_empty_optional_members_are_null() -> None:
    task = execution_pb2.ExecutionTask(execution="executions/e", attempt=1, extension_version="extensions/x/versions/1")
    document = build_request_document(task, {})
    assert document["deadline"] is None
    assert document["statusUrl"] is None
    assert document["statusUpdateKey"] is None
    assert document["extensionId"] == "x"  # from the version when the extension is unset
    assert document["priority"] == "PRIORITY_UNSPECIFIED"
    assert document["requestParameters"] == {}


def test_unicode_is_sent_as_utf8() -> None:
    task = _task()
    task.request.update({"text": "héllo ✓"})
    assert "héllo ✓".encode() in encode_body(build_request_document(task, {}))


def test_resource_id() -> None:
    assert resource_id("extensions/echo/versions/1.0.0", "versions") == "1.0.0"
    assert resource_id("extensions/echo/versions/1.0.0", "extensions") == "echo"
    assert resource_id("executions/e-1", "executions") == "e-1"
    assert resource_id("plain", "executions") == "plain"


def test_json_integers() -> None:
    assert json_integers({"a": [1.0, 1.5, -3.0, True, None, {"b": 2.0**53}], "c": 2.0**54}) == {
        "a": [1, 1.5, -3, True, None, {"b": 2**53}],
        "c": 2.0**54,
    }
