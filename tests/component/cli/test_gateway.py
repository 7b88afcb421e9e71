"""The client through the real Envoy gateway: one URL (``http://127.0.0.1:PORT``) for both services.

Envoy (rendered ``local`` configuration: JWT check with the hub's development JWKS, roles, transcoding) sits in
front of the hub process; the ``exthub`` commands run as real processes with only ``--url`` set, so native gRPC
for the catalog and the execution service goes through the gateway's single listener.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.envoy import RunningEnvoy, start_envoy
from gateway.render import render_config
from tests.component.cli.conftest import HubProcess

COMMAND_TIMEOUT = 60.0


@pytest.fixture
async def gateway(hub: HubProcess, tmp_path: Path) -> AsyncIterator[RunningEnvoy]:
    config = render_config(
        "local",
        data_dir=hub.data_dir,
        listen_port=0,
        catalog_address=hub.catalog,
        execution_address=hub.execution,
        objects_address=hub.objects,
        access_log=False,
    )
    envoy = await start_envoy(config, tmp_path / "envoy")
    try:
        yield envoy
    finally:
        await envoy.stop()


async def exthub(hub: HubProcess, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTHUB_")} | {"COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exthub.cli",
        *args,
        "--data-dir",
        str(hub.data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_commands_and_the_demo_work_through_the_gateway_url(hub: HubProcess, gateway: RunningEnvoy) -> None:
    code, out, err = await exthub(hub, "extensions", "list", "--url", gateway.url)
    assert code == 0, err
    assert "echo-plain" in out
    code, out, err = await exthub(hub, "demo", "--url", gateway.url, "--timeout", "20")
    assert code == 0, out + err
    assert out.count("✓ passed") == 6
    code, out, err = await exthub(hub, "executions", "get", "executions/nope", "--url", gateway.url)
    assert code == 1 and err.startswith("exthub executions get: ") and "Traceback" not in err
