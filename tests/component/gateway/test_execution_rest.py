"""Every execution REST route through Envoy in front of the real hub (catalog, execution, agent, echo).

The execution service's public URL is the gateway's, so the accessors it hands out, and the ``statusUrl`` echo
reports to, are gateway URLs: uploads, downloads and long-running status reports all go through Envoy. Every test
runs on both profiles (``hub_profile``): on the Azure one the gateway checks the emulators' Entra-shaped tokens and
object accessors are Azurite's user-delegation SAS URLs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import aiohttp
from yarl import URL

from exthub.contract.roles import AGENT, EXECUTIONS_RUN, HUB_ADMIN
from gateway.envoy import RunningEnvoy
from tests.component.gateway.conftest import Bearer, ServiceCalls, call
from tests.support.hub import Hub
from tests.support.profiles import azure_profile, hub_profile

__all__ = ["azure_profile", "hub_profile"]  # both profiles for the execution routes

RUN = (EXECUTIONS_RUN,)
PLAIN = "extensions/echo-plain/versions/1.0.0"
WITH_OBJECTS = "extensions/echo/versions/1.0.0"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "VALIDATION_SUCCEEDED", "VALIDATION_FAILED"}
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=20)


async def watch(http: aiohttp.ClientSession, gateway: RunningEnvoy, name: str, headers: dict[str, str]) -> list[Any]:
    """``GET …:watch``: newline-delimited JSON events until the server ends the stream."""
    async with http.get(f"{gateway.url}/v1/{name}:watch", headers=headers, timeout=WATCH_TIMEOUT) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) async for line in response.content if line.strip()]


async def create(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, headers: dict[str, str], **execution: Any
) -> dict[str, Any]:
    reply = await call(http, gateway, "POST", "/v1/executions", json_body=execution, headers=headers)
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


async def test_sync_execution_get_list_events_and_watch(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    runner = bearer(roles=RUN)
    request_id = str(uuid.uuid4())
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        params={"requestId": request_id},
        json_body={"extensionVersion": PLAIN, "request": {"hello": "world"}, "labels": {"order": "42"}},
        headers=runner,
    )
    assert created.status == 200, created.body
    execution = created.body
    assert execution["state"] == "SUCCEEDED" and execution["mode"] == "SYNC" and execution["priority"] == "NORMAL"
    assert execution["tenant"] == "tenant-a" and execution["labels"] == {"order": "42"}
    assert execution["result"]["echo"] == {"hello": "world"} and execution["attempt"] == 1
    name = execution["name"]
    again = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        params={"requestId": request_id},
        json_body={"extensionVersion": PLAIN, "request": {"hello": "world"}, "labels": {"order": "42"}},
        headers=runner,
    )
    assert again.status == 200 and again.body["name"] == name, "requestId makes create idempotent"

    got = await call(http, gateway, "GET", f"/v1/{name}", headers=bearer())
    assert got.status == 200 and got.body["result"]["echo"] == {"hello": "world"}
    listed = await call(
        http, gateway, "GET", "/v1/executions", params={"filter": 'state = "SUCCEEDED"'}, headers=bearer()
    )
    assert listed.status == 200 and [e["name"] for e in listed.body["executions"]] == [name]
    assert listed.body["nextPageToken"] == ""
    events = await call(http, gateway, "GET", f"/v1/{name}/events", headers=bearer())
    assert events.status == 200 and events.body["events"][-1]["state"] == "SUCCEEDED"
    assert [e["sequence"] for e in events.body["events"]] == [str(n) for n in range(1, len(events.body["events"]) + 1)]
    streamed = await watch(http, gateway, name, bearer())
    assert streamed == events.body["events"], "a finished execution's watch replays its events, then ends"
    other_tenant = await call(http, gateway, "GET", f"/v1/{name}", headers=bearer(tenant="tenant-b"))
    assert (other_tenant.status, other_tenant.code, other_tenant.reason) == (404, "NOT_FOUND", "EXECUTION_NOT_FOUND")
    keys = await call(http, gateway, "GET", "/v1/signingKeys")
    assert keys.status == 200 and keys.body["keys"]
    assert {"kty", "kid", "use", "alg"} <= set(keys.body["keys"][0])


async def test_long_running_watch_streams_until_the_terminal_event(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    """echo answers 202, then reports 50 % and SUCCEEDED to its ``statusUrl`` — the gateway's ``:reportStatus``,
    which needs no bearer token (the status-update key authenticates it). The watch, opened while the execution
    is RUNNING, streams NDJSON live and ends after the terminal event."""
    runner = bearer(roles=RUN)
    execution = await create(
        http, gateway, runner, extensionVersion=PLAIN, request={"longRunning": True, "delaySeconds": 0.5}
    )
    assert execution["state"] == "RUNNING", execution
    streamed = await watch(http, gateway, execution["name"], bearer())
    assert [e["sequence"] for e in streamed] == [str(n) for n in range(1, len(streamed) + 1)], "gap-free"
    assert streamed[0]["type"] == "CREATED" and streamed[-1]["state"] == "SUCCEEDED"
    assert [e["state"] for e in streamed].count("SUCCEEDED") == 1
    assert any(e["type"] == "PROGRESS" and e["percentComplete"] == 50 for e in streamed)
    reports = service_calls.metadata("ReportExecutionStatus")
    assert len(reports) == 2, "echo's two reports reached the service through Envoy"
    for metadata in reports:
        assert metadata["x-envoy-original-method"] == "POST", "transcoded by the gateway"
        assert "x-envoy-original-path" not in metadata, "the REST URL stays inside the gateway"
        assert "authorization" not in metadata
    done = await call(http, gateway, "GET", f"/v1/{execution['name']}", headers=bearer())
    assert done.body["state"] == "SUCCEEDED" and done.body["percentComplete"] == 100
    assert done.body["result"]["echo"] == {"longRunning": True, "delaySeconds": 0.5}


async def test_report_status_is_authenticated_by_the_status_update_key(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    runner = bearer(roles=RUN)
    execution = await create(
        http, gateway, runner, extensionVersion=PLAIN, request={"longRunning": True, "delaySeconds": 30}
    )
    name = execution["name"]
    report = {"statusUpdateKey": "A" * 43, "attempt": 1, "state": "SUCCEEDED"}
    wrong_key = await call(http, gateway, "POST", f"/v1/{name}:reportStatus", json_body=report)
    assert (wrong_key.status, wrong_key.code, wrong_key.reason) == (403, "PERMISSION_DENIED", "STATUS_KEY_INVALID")
    unknown = await call(http, gateway, "POST", f"/v1/executions/{uuid.uuid4()}:reportStatus", json_body=report)
    assert (unknown.status, unknown.body) == (wrong_key.status, wrong_key.body), "no existence leak"
    cancelled = await call(http, gateway, "POST", f"/v1/{name}:cancel", json_body={}, headers=runner)
    assert cancelled.status == 200 and cancelled.body["state"] in ("RUNNING", "CANCELLED"), cancelled.body
    streamed = await watch(http, gateway, name, bearer())
    assert streamed[-1]["state"] == "CANCELLED"


def object_base(hub: Hub, gateway: RunningEnvoy) -> str:
    """Where accessors point: the gateway's ``/objects/v1/`` (``local/v1``), or the blob container (``az-blob/v1``,
    user-delegation SAS URLs that never pass the gateway)."""
    if hub.settings is None or hub.settings.backend == "local":
        return gateway.url + "/objects/v1/"
    return f"{hub.settings.azure.blob_account_url}/{hub.settings.azure.blob_container}/executions/"


async def test_inputs_uploaded_and_outputs_downloaded_through_the_gateway(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    runner = bearer(roles=RUN)
    created = await create(
        http, gateway, runner, extensionVersion=WITH_OBJECTS, request={"kind": "objects"}, expectedInputs=["document"]
    )
    assert created["state"] == "PENDING_INPUTS", created
    (document,) = created["inputs"]
    upload = document["upload"]
    objects = object_base(hub, gateway)
    assert upload["uri"].startswith(objects), "accessors are built from the public URL (or are Blob Storage's)"
    assert upload["method"] == "PUT" and upload["accessMode"] == "WRITE_ONLY"
    content = b"hello objects through envoy" * 100
    async with http.put(URL(upload["uri"], encoded=True), data=content, headers=upload.get("headers")) as response:
        assert response.status in (200, 201), await response.text()
    done = await call(
        http,
        gateway,
        "POST",
        f"/v1/{created['name']}:continue",
        json_body={"providedInputs": ["document"]},
        headers=runner,
    )
    assert done.status == 200 and done.body["state"] == "SUCCEEDED", done.body
    assert done.body["result"]["inputs"]["document"] == {
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    (report,) = done.body["outputs"]
    download = report["download"]
    assert download["uri"].startswith(objects) and download["accessMode"] == "READ_ONLY"
    async with http.get(URL(download["uri"], encoded=True)) as response:
        assert response.status == 200
        assert json.loads(await response.read()) == {"kind": "objects"}
    # the URL's signature is the only credential: a tampered or misused URL is refused by the object server
    async with http.get(URL(download["uri"].replace("sig=", "sig=A"), encoded=True)) as response:
        assert response.status == 403
    # a write with a read-only accessor (sent as a write must be: with the upload's headers) is refused
    async with http.put(URL(download["uri"], encoded=True), data=b"x", headers=upload.get("headers")) as response:
        assert response.status == 403
    async with http.get(URL(upload["uri"], encoded=True)) as response:
        assert response.status == 403


async def test_cancel_continue_and_retry(http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer) -> None:
    runner = bearer(roles=RUN)
    pending = await create(http, gateway, runner, extensionVersion=WITH_OBJECTS, expectedInputs=["document"])
    assert pending["state"] == "PENDING_INPUTS"
    name = pending["name"]
    missing = await call(
        http, gateway, "POST", f"/v1/{name}:continue", json_body={"providedInputs": ["document"]}, headers=runner
    )
    assert (missing.status, missing.code) == (400, "FAILED_PRECONDITION"), missing.body
    assert missing.reason == "INPUTS_MISSING" and missing.error_info.metadata["missingInputs"] == "document"
    cancelled = await call(http, gateway, "POST", f"/v1/{name}:cancel", json_body={}, headers=runner)
    assert cancelled.status == 200 and cancelled.body["state"] == "CANCELLED"
    again = await call(http, gateway, "POST", f"/v1/{name}:continue", json_body={}, headers=runner)
    assert again.status == 200 and again.body["state"] == "CANCELLED", "a late continue is a no-op"
    streamed = await watch(http, gateway, name, bearer())
    assert streamed[-1]["state"] == "CANCELLED"

    failed = await create(http, gateway, runner, extensionVersion=PLAIN, request={"failWith": 500})
    assert failed["state"] == "FAILED" and failed["error"]["details"], failed
    retried = await call(http, gateway, "POST", f"/v1/{failed['name']}:retry", json_body={}, headers=runner)
    assert retried.status == 200, retried.body
    assert retried.body["retriedFrom"] == failed["name"] and retried.body["name"] != failed["name"]
    assert retried.body["request"] == {"failWith": 500}
    running = await create(
        http, gateway, runner, extensionVersion=PLAIN, request={"longRunning": True, "delaySeconds": 30}
    )
    not_terminal = await call(http, gateway, "POST", f"/v1/{running['name']}:retry", json_body={}, headers=runner)
    assert (not_terminal.status, not_terminal.reason) == (400, "EXECUTION_NOT_TERMINAL")
    await call(http, gateway, "POST", f"/v1/{running['name']}:cancel", json_body={}, headers=runner)


async def test_validation_and_direct_profiles(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    runner = bearer(roles=RUN)
    invalid = await create(http, gateway, runner, extensionVersion=PLAIN, validateOnly=True, request={"invalid": True})
    assert invalid["state"] == "VALIDATION_FAILED"
    assert [e["field"] for e in invalid["validationErrors"]] == ["invalid"]
    valid = await create(http, gateway, runner, extensionVersion=PLAIN, validateOnly=True)
    assert valid["state"] == "VALIDATION_SUCCEEDED"
    direct = await create(http, gateway, runner, extensionVersion=PLAIN, profile="direct")
    assert direct["state"] == "DIRECT_TOKEN_ISSUED" and direct["mode"] == "DIRECT"
    assert direct["directToken"].count(".") == 2
    high = await create(http, gateway, runner, extensionVersion=PLAIN, priority="high")
    assert high["priority"] == "HIGH", "enums are parsed case-insensitively and printed as names"


async def test_execution_errors(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub, service_calls: ServiceCalls
) -> None:
    runner = bearer(roles=RUN)
    bad_version = await call(
        http, gateway, "POST", "/v1/executions", json_body={"extensionVersion": "nope"}, headers=runner
    )
    assert (bad_version.status, bad_version.code, bad_version.reason) == (400, "INVALID_ARGUMENT", "INVALID_FIELD")
    assert bad_version.field_violations
    unknown_version = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": "extensions/echo/versions/9.9.9"},
        headers=runner,
    )
    assert (unknown_version.status, unknown_version.reason) == (404, "VERSION_NOT_FOUND")
    bad_request_id = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        params={"requestId": "not-a-uuid"},
        json_body={"extensionVersion": PLAIN},
        headers=runner,
    )
    assert (bad_request_id.status, bad_request_id.reason) == (400, "INVALID_FIELD")
    bad_filter = await call(http, gateway, "GET", "/v1/executions", params={"filter": "state = "}, headers=runner)
    assert (bad_filter.status, bad_filter.reason) == (400, "INVALID_FILTER")
    missing = await call(http, gateway, "GET", f"/v1/executions/{uuid.uuid4()}", headers=runner)
    assert (missing.status, missing.code, missing.reason) == (404, "NOT_FOUND", "EXECUTION_NOT_FOUND")
    unknown_query = await call(http, gateway, "GET", "/v1/executions", params={"state": "RUNNING"}, headers=runner)
    assert (unknown_query.status, unknown_query.reason) == (400, "INVALID_REQUEST")
    reached = len(service_calls)
    unknown_route = await call(http, gateway, "GET", "/v1/executions/x/attempts", headers=runner)
    assert (unknown_route.status, unknown_route.reason) == (404, "ROUTE_NOT_FOUND")
    assert len(service_calls) == reached

    # the execution service goes away: 503 UNAVAILABLE as JSON google.rpc.Status, for REST and the watch stream
    await hub.execution.stop(0)
    down = await call(http, gateway, "GET", "/v1/executions", headers=runner)
    assert (down.status, down.code, down.reason) == (503, "UNAVAILABLE", "BACKEND_UNAVAILABLE")
    async with http.get(f"{gateway.url}/v1/executions/x:watch", headers=runner, timeout=WATCH_TIMEOUT) as response:
        assert response.status == 503


async def test_concurrent_watches_each_end(http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer) -> None:
    runner = bearer(roles=RUN)
    executions = [
        await create(http, gateway, runner, extensionVersion=PLAIN, request={"longRunning": True, "n": n})
        for n in range(3)
    ]
    streams = await asyncio.gather(*(watch(http, gateway, e["name"], bearer()) for e in executions))
    for execution, stream in zip(executions, streams, strict=True):
        assert [e["state"] for e in stream if e["state"] in TERMINAL] == ["SUCCEEDED"]
        assert all(e["name"].startswith(f"{execution['name']}/events/") for e in stream)


async def test_admin_only_route(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    """``GET /v1/deadLetters`` (Hub.Admin): RBAC refuses other roles at the gateway, an admin gets the page."""
    reached = len(service_calls)
    runner = await call(http, gateway, "GET", "/v1/deadLetters", headers=bearer(roles=(EXECUTIONS_RUN, AGENT)))
    assert (runner.status, runner.reason) == (403, "ROLE_REQUIRED"), runner.body
    assert len(service_calls) == reached
    admin = await call(
        http, gateway, "GET", "/v1/deadLetters", params={"pageSize": "10"}, headers=bearer(roles=(HUB_ADMIN,))
    )
    assert admin.status == 200, admin.body
    assert admin.body == {"deadLetters": [], "nextPageToken": ""}
