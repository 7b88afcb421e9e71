"""`exthub up --backend azure --emulators` as a user runs it: a real subprocess that starts the emulators and the hub
on them, serves REST with tokens from `exthub token`, and stops with no child left (the emulators included)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.exthub_up import RunningHub, alive, children, command_lines, dev_token

AZURE = ("--backend", "azure", "--emulators")
START_TIMEOUT = 120.0  # four emulators, then the hub, on a loaded 2-core machine
CALL_TIMEOUT = 20.0
PARTS = (
    "services.catalog",
    "services.agent",
    "services.execution",
    "services.echo",
    "envoy",
    "cosmosdb-server",
    "azurite",
    "tools.emulators.token_authority",
    "tools.emulators.servicebus_broker",
)


def rest(url: str, bearer: str, method: str = "GET", body: Any = None) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the hub's loopback URL
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {bearer}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:  # noqa: S310
        document: dict[str, Any] = json.loads(response.read())
    return document


def watch(url: str, bearer: str) -> list[dict[str, Any]]:
    """``GET …:watch``: the events (newline-delimited JSON) until the stream ends at the terminal state."""
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {bearer}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:  # noqa: S310
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


async def test_up_on_the_emulators_serves_rest_and_stops_with_no_child_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    hub = RunningHub(data_dir, args=AZURE, start_timeout=START_TIMEOUT)
    try:
        parts = children(hub.process.pid)
        names = command_lines(parts)
        for part in PARTS:
            assert any(part in name for name in names), f"{part} is not running under exthub up: {names}"
        run = dev_token(data_dir, "Executions.Run", timeout=60)
        claims = json.loads(base64.urlsafe_b64decode(run.split(".")[1] + "=="))
        assert claims["iss"].startswith("https://127.0.0.1:") and claims["iss"].endswith("/v2.0")  # the authority
        created = await asyncio.to_thread(
            rest,
            f"{hub.url}/v1/executions",
            run,
            "POST",
            {"extensionVersion": "extensions/echo-plain/versions/latest", "request": {"message": "on azure"}},
        )
        assert created["state"] == "SUCCEEDED", created
        assert created["result"]["echo"] == {"message": "on azure"}
        queued = await asyncio.to_thread(
            rest,
            f"{hub.url}/v1/executions",
            run,
            "POST",
            {"extensionVersion": "extensions/echo-plain/versions/latest", "profile": "async", "request": {"n": 1}},
        )
        assert queued["state"] == "QUEUED", queued
        events = await asyncio.to_thread(watch, f"{hub.url}/v1/{queued['name']}:watch", run)
        assert events[-1]["state"] == "SUCCEEDED", events  # the stream ends at the terminal state
        echo = await asyncio.to_thread(rest, f"{hub.url}/v1/extensions/echo/versions/1.0.0", run)
        assert {p["objectProvider"] for p in echo["profiles"]} == {"az-blob/v1"}
    finally:
        code = hub.stop()
    assert code == 0, hub.log.read_text()[-3000:]
    assert not [pid for pid in parts if alive(pid)], "no child process (emulators included) outlives `exthub up`"
    assert not (data_dir / "emulators" / "stack.json").exists()
