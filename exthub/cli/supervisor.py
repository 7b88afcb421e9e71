"""Runs the hub's parts as child processes: start in order, wait for health, stop them all on a signal.

Each child binds port 0 (or the port it is given), prints ``<name> serving on <address>`` when ready, and is
then checked with ``grpc.health.v1``. Output goes to ``<data-dir>/logs/<name>.log``. A child that exits on its
own stops the whole hub with a message: nothing is restarted silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from services.platform.auth.dev_issuer import DevIssuer

READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
_console = Console(stderr=True)


class HubStartError(Exception):
    """The hub could not start; the message says why in one line."""


@dataclass
class ChildSpec:
    """How to start one part of the hub and recognise that it is ready."""

    name: str
    module: str
    env: dict[str, str]
    ready: re.Pattern[str]
    grpc_health: bool = True


@dataclass
class Child:
    """A started part of the hub."""

    spec: ChildSpec
    process: asyncio.subprocess.Process
    address: str = ""
    log: IO[str] | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)


def _prepare_data_dir(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "logs").mkdir(exist_ok=True)
        probe = data_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise HubStartError(f"the data directory {data_dir} is not usable: {error.strerror or error}") from None
    return data_dir.resolve()


async def _start(spec: ChildSpec, data_dir: Path) -> Child:
    log = (data_dir / "logs" / f"{spec.name}.log").open("a", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        spec.module,
        env={**os.environ, **spec.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    child = Child(spec, process, log=log)
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            child.address = await _read_ready_line(child, data_dir)
            if spec.grpc_health:
                await _wait_serving(child.address)
    except TimeoutError:
        await _stop(child)
        raise HubStartError(f"{spec.name} did not become ready within {READY_TIMEOUT_SECONDS:.0f}s") from None
    except BaseException:
        await _stop(child)
        raise
    assert process.stdout is not None
    child.pump = asyncio.create_task(_pump(process.stdout, log))
    return child


async def _read_ready_line(child: Child, data_dir: Path) -> str:
    """Copies the child's output to its log until the ready line; the address it announces."""
    assert child.process.stdout is not None
    assert child.log is not None
    while line := (await child.process.stdout.readline()).decode("utf-8", "replace"):
        child.log.write(line)
        child.log.flush()
        if match := child.spec.ready.search(line):
            return match.group(1)
    code = await child.process.wait()
    log_path = data_dir / "logs" / f"{child.spec.name}.log"
    raise HubStartError(f"{child.spec.name} exited during start (code {code}); see {log_path}")


async def _pump(stream: asyncio.StreamReader, log: IO[str]) -> None:
    while line := await stream.readline():
        log.write(line.decode("utf-8", "replace"))
        log.flush()


async def _wait_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=True)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)


async def _stop(child: Child) -> None:
    process = child.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    if child.pump is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await child.pump
    if child.log is not None:
        child.log.close()


def hub_children(data_dir: Path, port: int) -> list[ChildSpec]:
    """The parts of the hub, in start order."""
    base = {"EXTHUB_DATA_DIR": str(data_dir), "EXTHUB_BACKEND": "local", "EXTHUB_LOG_FORMAT": "json"}
    return [
        ChildSpec(
            name="catalog",
            module="services.catalog",
            env={**base, "EXTHUB_CATALOG_PORT": str(port)},
            ready=re.compile(r"catalog serving on (\S+)"),
        ),
    ]


async def run_hub(*, data_dir: Path, port: int) -> int:
    """Starts every part, prints the public address, and stops everything on SIGINT/SIGTERM.

    Returns 0 after a requested stop, 1 when a part exited on its own.
    """
    data_dir = _prepare_data_dir(data_dir)
    await asyncio.to_thread(DevIssuer.load_or_create, data_dir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[Child] = []
    try:
        for spec in hub_children(data_dir, port):
            with _console.status(f"starting {spec.name}…"):
                child = await _start(spec, data_dir)
            children.append(child)
            _console.print(f"[green]✓[/green] {spec.name} ready on {child.address}")
        public = children[0].address
        print(f"grpc://{public}" if not public.startswith("http") else public, flush=True)
        _console.print(f"data: {data_dir}  logs: {data_dir / 'logs'}  (Ctrl-C stops the hub)")
        waits = [asyncio.create_task(c.process.wait()) for c in children]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in waits:
            task.cancel()
        if stopper in done:
            return 0
        crashed = [c.spec.name for c in children if c.process.returncode is not None]
        _console.print(f"[red]{', '.join(crashed)} exited unexpectedly; stopping the hub (see the logs)[/red]")
        return 1
    finally:
        for child in reversed(children):
            await _stop(child)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if children:
            _console.print("hub stopped")
