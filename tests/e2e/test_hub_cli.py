"""`exthub up` and `exthub token` as a user runs them: a real subprocess, SIGTERM, restart on the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2

EXTHUB = [sys.executable, "-m", "exthub.cli"]
START_TIMEOUT = 40.0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


class Hub:
    """A running `exthub up` and the address it printed."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [*EXTHUB, "up", "--data-dir", str(data_dir), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        first = ""
        while time.monotonic() < deadline and not first:
            first = self.process.stdout.readline().strip()
            if not first and self.process.poll() is not None:
                break
        assert first.startswith("grpc://"), (
            f"no address printed; stderr: {self.process.stderr.read() if self.process.stderr else ''}"
        )
        self.address = first.removeprefix("grpc://")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _token(data_dir: Path, *roles: str) -> str:
    result = subprocess.run(
        [*EXTHUB, "token", "--data-dir", str(data_dir), "--roles", ",".join(roles)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


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


async def test_up_serves_stops_cleanly_and_keeps_data(data_dir: Path) -> None:
    hub = Hub(data_dir)
    try:
        children = _children(hub.process.pid)
        assert children, "exthub up runs the services as child processes"
        await _create(hub.address, _token(data_dir, "Extensions.Publish"), "kept")
    finally:
        code = hub.stop()
    assert code == 0
    assert not [pid for pid in children if _alive(pid)], "no child process outlives `exthub up`"

    again = Hub(data_dir)
    try:
        kept = await _get(again.address, _token(data_dir), "kept")
        assert kept.display_name == "Kept"
    finally:
        assert again.stop() == 0


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
    token = _token(tmp_path, "Hub.Admin", "Agent")
    assert token.count(".") == 2
