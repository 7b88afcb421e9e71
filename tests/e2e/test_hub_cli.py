"""`exthub up` and `exthub token` as a user runs them: a real subprocess, SIGTERM, restart on the same data."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.roles import AGENT, EXECUTIONS_RUN, EXTENSIONS_PUBLISH, HUB_ADMIN
from services.platform.entrypoint import INTERPRETER_OPTIONS
from tests.e2e.exthub_up import EXTHUB, RunningHub, alive, children, command_lines, dev_token


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "hub-data"


async def _create(address: str, token: str, extension_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        await stub.CreateExtension(
            pb.CreateExtensionRequest(
                extension_id=extension_id, extension=resources_pb2.Extension(display_name="Kept", publisher="Me")
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )


async def _get(address: str, token: str, extension_id: str) -> resources_pb2.Extension:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        return await stub.GetExtension(
            pb.GetExtensionRequest(name=f"extensions/{extension_id}"),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )


def _rest(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the hub's loopback URL
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        document: dict[str, Any] = json.loads(response.read())
    return document


async def test_up_serves_stops_cleanly_and_keeps_data(data_dir: Path) -> None:
    hub = RunningHub(data_dir)
    try:
        parts = children(hub.process.pid)
        names = command_lines(parts)
        for part in ("services.catalog", "services.agent", "services.execution", "services.echo", "envoy"):
            assert any(part in name for name in names), f"{part} is not running under exthub up: {names}"
        python_parts = [name.split() for name in names if "services." in name]
        assert len(python_parts) == 4 and all(
            words[1 : 1 + len(INTERPRETER_OPTIONS)] == list(INTERPRETER_OPTIONS) for words in python_parts
        ), f"the services must run with {INTERPRETER_OPTIONS}: {names}"
        await _create(hub.address, dev_token(data_dir, EXTENSIONS_PUBLISH), "kept")
        run = dev_token(data_dir, EXECUTIONS_RUN)
        execution = await asyncio.to_thread(
            _rest,
            f"{hub.url}/v1/executions",
            run,
            "POST",
            {"extensionVersion": "extensions/echo-plain/versions/latest", "request": {"message": "kept"}},
        )
        assert execution["state"] == "SUCCEEDED"
        assert execution["result"]["echo"] == {"message": "kept"}
    finally:
        code = hub.stop()
    assert code == 0
    assert not [pid for pid in parts if alive(pid)], "no child process outlives `exthub up`"

    again = RunningHub(data_dir)
    try:
        kept = await _get(again.address, dev_token(data_dir), "kept")
        assert kept.display_name == "Kept"
        seen = await asyncio.to_thread(_rest, f"{again.url}/v1/{execution['name']}", run)
        assert seen["state"] == "SUCCEEDED"
        assert seen["etag"] == execution["etag"]
        # echo keeps its port across restarts, so the registered version still reaches it
        fresh = await asyncio.to_thread(
            _rest,
            f"{again.url}/v1/executions",
            run,
            "POST",
            {"extensionVersion": "extensions/echo-plain/versions/1.0.0", "request": {"n": 2}},
        )
        assert fresh["state"] == "SUCCEEDED"
    finally:
        assert again.stop() == 0


def test_port_in_use_gives_a_clear_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*EXTHUB, "up", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_data_dir_gives_a_clear_message(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = subprocess.run(
        [*EXTHUB, "up", "--data-dir", str(not_a_dir)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "data directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_is_accepted_shape(tmp_path: Path) -> None:
    token = dev_token(tmp_path, HUB_ADMIN, AGENT)
    assert token.count(".") == 2
