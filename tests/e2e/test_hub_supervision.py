"""`exthub up` heals itself: a part that dies is restarted on its address and the hub serves again; a part
that keeps dying stops the hub with a message; a stopped hub starts again at once on the same port."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from exthub.cli.endpoints import read_endpoints
from exthub.cli.supervisor import part_port_range
from exthub.contract.roles import EXECUTIONS_RUN
from tests.e2e.exthub_up import (
    PARTS,
    RECOVERY_TIMEOUT,
    RunningHub,
    alive,
    children,
    dev_token,
    part_pid,
    poll_interval,
    wait_new_pid,
)

CRASHING_STOP_TIMEOUT = 90.0


def _token(data_dir: Path) -> str:
    return dev_token(data_dir, EXECUTIONS_RUN)


def _run_echo(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the hub's loopback URL
        f"{url}/v1/executions",
        method="POST",
        data=json.dumps({"extensionVersion": "extensions/echo-plain/versions/latest", "request": {"n": 1}}).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        document: dict[str, Any] = json.loads(response.read())
    return document


def _serves_again(hub: RunningHub, token: str) -> dict[str, Any]:
    """A synchronous echo execution through the gateway succeeds (retried while the hub recovers)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        try:
            execution = _run_echo(hub.url, token)
            if execution.get("state") == "SUCCEEDED":
                return execution
            last = execution
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = error
        poll_interval(hub)
    raise AssertionError(f"the hub did not serve again within {RECOVERY_TIMEOUT}s: {last}")


def _listening_ports(endpoints: dict[str, Any]) -> set[int]:
    """Every port a part listens on, from endpoints.json."""
    addresses = [a for part in endpoints["parts"].values() for k, a in part.items() if k != "pid"]
    return {int(a.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1]) for a in addresses}


def test_every_part_killed_comes_back_and_the_hub_serves(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    hub = RunningHub(data_dir)
    try:
        token = _token(data_dir)
        _serves_again(hub, token)
        ports = _listening_ports(read_endpoints(data_dir))
        assert len(ports) >= 8 and all(port in part_port_range() for port in ports), ports
        for part in PARTS:
            old = part_pid(hub, part)
            assert old is not None, f"{part} is not running"
            os.kill(old, signal.SIGKILL)
            new = wait_new_pid(hub, part, old)
            assert not alive(old)
            execution = _serves_again(hub, token)
            assert execution["result"]["echo"] == {"n": 1}, part
            assert alive(new)
        output = hub.log.read_text()
        for part in PARTS:
            assert f"{part} exited unexpectedly" in output and f"{part} restarted on" in output, output[-3000:]
    finally:
        assert hub.stop() == 0


def test_a_part_that_keeps_crashing_stops_the_hub_with_a_message(tmp_path: Path) -> None:
    """echo's port is taken while it is down: every restart fails, and after a few the hub gives up."""
    data_dir = tmp_path / "hub"
    hub = RunningHub(data_dir)
    port = int((data_dir / "echo.port").read_text())
    parts = children(hub.process.pid)
    try:
        echo = part_pid(hub, "echo")
        assert echo is not None
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            os.kill(echo, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while True:  # the port is free as soon as echo is gone
                try:
                    squatter.bind(("127.0.0.1", port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, "echo's port never came free"
                    poll_interval(hub)
            squatter.listen()
            code = hub.process.wait(timeout=CRASHING_STOP_TIMEOUT)
    finally:
        if hub.process.poll() is None:
            hub.stop()
    output = hub.log.read_text()
    assert code == 1, output[-3000:]
    assert "echo keeps crashing" in output and "stopping the hub" in output, output[-3000:]
    assert "restarting it in" in output
    assert "Traceback" not in output
    assert not [pid for pid in parts if alive(pid)], "no child process outlives `exthub up`"


def _time_wait_on(port: int) -> bool:
    """Whether a TCP connection of local port ``port`` is in TIME_WAIT (state 06 in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if int(local.split(":")[1], 16) == port and state == "06":
            return True
    return False


def test_a_stopped_hub_starts_again_at_once_on_the_same_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = tmp_path / "hub"
    hub = RunningHub(data_dir, port=port)
    try:
        token = _token(data_dir)
        _serves_again(hub, token)
        # a connection the gateway closes first leaves its side in TIME_WAIT when the hub stops
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
    finally:
        assert hub.stop() == 0
    held.close()
    if not _time_wait_on(port):
        pytest.fail("the scenario needs a TIME_WAIT connection on the gateway's port")
    again = RunningHub(data_dir, port=port)
    try:
        assert again.url == f"http://127.0.0.1:{port}"
        _serves_again(again, token)
    finally:
        assert again.stop() == 0
