"""Runs the whole hub as child processes: start in order, wait for health, stop them all on a signal.

Parts: catalog, agent (with its queue worker) and the sample extension ``echo`` side by side, then
execution (gRPC + its object/JWKS HTTP endpoint; the agent and echo reach it on ports reserved for it before
they start), then ``echo`` is registered in the catalog (first start only), then Envoy on the one public
port. Each Python part prints ``<name> serving on <address>`` when it is ready and is then checked with
``grpc.health.v1``; Envoy is ready when its admin ``/ready`` (on its Unix socket) says so. Output goes to
``<data-dir>/logs/<name>.log``. Every child runs in its own session and is stopped by its own pid, last
started first.

Supervision: a part that exits on its own is restarted on the same address (so the others reconnect to it),
after a back-off that doubles from :data:`RESTART_BACKOFF_SECONDS` up to :data:`RESTART_BACKOFF_MAX_SECONDS`,
and the console says so. A part that crashes :data:`CRASH_LIMIT` times within :data:`CRASH_WINDOW_SECONDS`
(or cannot be started again that often) stops the whole hub with a message naming it and its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import SERVICE_TENANT, DevIssuer
from exthub.contract.roles import EXTENSIONS_PUBLISH
from gateway.envoy import EnvoyError, RunningEnvoy, start_envoy
from gateway.render import render_config
from services.echo.registration import register_echo

ECHO_EXTENSION = "echo"
ECHO_PLAIN_EXTENSION = "echo-plain"
READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
HEALTH_CALL_TIMEOUT_SECONDS = 2.0
RESTART_BACKOFF_SECONDS = 0.25
RESTART_BACKOFF_MAX_SECONDS = 5.0
CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
_console = Console(stderr=True)


class HubStartError(Exception):
    """The hub could not start; the message says why in one line."""


@dataclass
class ChildSpec:
    """How to start one Python part of the hub and recognise that it is ready."""

    name: str
    module: str
    env: dict[str, str]
    ready: tuple[re.Pattern[str], ...]
    args: tuple[str, ...] = ()
    grpc_health: bool = True
    #: the variable holding its port (0 on the first start: the announced port is kept for restarts)
    port_env: str | None = None


@dataclass
class Child:
    """A started part of the hub and what it announced (one value per ``ready`` pattern)."""

    name: str
    process: asyncio.subprocess.Process
    announced: list[str] = field(default_factory=list)
    log: IO[str] | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    envoy: RunningEnvoy | None = None

    @property
    def address(self) -> str:
        """The first address it announced."""
        return self.announced[0]


@dataclass(frozen=True)
class HubAddresses:
    """Where the parts listen once the hub is up."""

    public_url: str
    catalog: str
    agent: str
    execution: str
    objects_url: str
    echo_url: str


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


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. ``SO_REUSEADDR`` as the servers themselves use it: a port
    whose last connections linger in TIME_WAIT (a hub just stopped) is free; one something listens on is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    """A port the OS has just handed out (for a part whose address another part needs before it starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _public_port(port: int) -> int:
    if port == 0:
        return _free_port()
    if not _port_free(port):
        raise HubStartError(f"port {port} is already in use; stop what uses it or choose another with --port")
    return port


def _echo_port(data_dir: Path) -> int:
    """echo's port, kept in the data directory: the registered version's URLs must stay valid across restarts."""
    saved = data_dir / "echo.port"
    text = saved.read_text(encoding="utf-8").strip() if saved.exists() else ""
    if text.isdigit():
        port = int(text)
        if not _port_free(port):
            raise HubStartError(
                f"port {port} of the sample extension is in use (kept in {saved} because the registered "
                "extension points at it)"
            )
        return port
    port = _free_port()
    saved.write_text(f"{port}\n", encoding="utf-8")
    return port


def _host_port(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


async def _start(spec: ChildSpec, data_dir: Path) -> Child:
    log = (data_dir / "logs" / f"{spec.name}.log").open("a", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        spec.module,
        *spec.args,
        env={**os.environ, **spec.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    child = Child(spec.name, process, log=log)
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            for pattern in spec.ready:
                child.announced.append(await _read_ready_line(child, pattern, data_dir))
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


async def _read_ready_line(child: Child, pattern: re.Pattern[str], data_dir: Path) -> str:
    """Copies the child's output to its log until a line matches ``pattern``; the value it announces."""
    assert child.process.stdout is not None
    assert child.log is not None
    while line := (await child.process.stdout.readline()).decode("utf-8", "replace"):
        child.log.write(line)
        child.log.flush()
        if match := pattern.search(line):
            return match.group(1)
    code = await child.process.wait()
    log_path = data_dir / "logs" / f"{child.name}.log"
    last = _last_line(log_path)
    raise HubStartError(f"{child.name} exited during start (code {code}): {last or 'no output'}; see {log_path}")


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


async def _pump(stream: asyncio.StreamReader, log: IO[str]) -> None:
    while line := await stream.readline():
        log.write(line.decode("utf-8", "replace"))
        log.flush()


async def _wait_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = await stub.Check(
                    health_pb2.HealthCheckRequest(), timeout=HEALTH_CALL_TIMEOUT_SECONDS, wait_for_ready=True
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)  # poll interval of the readiness loop (bounded by the caller's timeout)


async def _stop(child: Child) -> None:
    if child.envoy is not None:
        await child.envoy.stop(STOP_GRACE_SECONDS)
        return
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


def _service(name: str, env: dict[str, str], *more: re.Pattern[str], port_env: str | None = None) -> ChildSpec:
    return ChildSpec(name, f"services.{name}", env, (re.compile(rf"{name} serving on (\S+)"), *more), port_env=port_env)


@dataclass
class Part:
    """A supervised part: the running child, how to start it again, and when it crashed lately."""

    name: str
    child: Child
    restart: Callable[[], Coroutine[None, None, Child]]
    crashes: deque[float] = field(default_factory=deque)


def _python_part(spec: ChildSpec, child: Child, data_dir: Path) -> Part:
    """A Python part, restarted with the same port it announced on its first start."""
    if spec.port_env is not None and spec.env.get(spec.port_env) == "0":
        spec.env[spec.port_env] = child.address.rsplit(":", 1)[1]
    return Part(spec.name, child, lambda: _start(spec, data_dir))


async def _register_echo(issuer: DevIssuer, catalog_address: str, echo_url: str) -> None:
    """Registers ``extensions/echo`` (and ``echo-plain``, the same app without inputs) unless they exist."""
    token = issuer.issue(tenant=SERVICE_TENANT, user="exthub-up", roles=[EXTENSIONS_PUBLISH], ttl_seconds=300)
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(catalog_address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        try:
            await register_echo(stub, echo_url=echo_url, metadata=metadata)
            await register_echo(
                stub, echo_url=echo_url, metadata=metadata, extension_id=ECHO_PLAIN_EXTENSION, with_objects=False
            )
        except grpc.aio.AioRpcError as error:
            raise HubStartError(
                f"registering the sample extension failed: {error.code().name}: {error.details()}"
            ) from None


async def _start_gateway(data_dir: Path, port: int, addresses: dict[str, str]) -> Child:
    config = render_config(
        "local",
        data_dir=data_dir,
        listen_port=port,
        catalog_address=addresses["catalog"],
        execution_address=addresses["execution"],
        objects_address=addresses["objects"],
    )
    try:
        envoy = await start_envoy(config, data_dir / "gateway", ready_timeout=READY_TIMEOUT_SECONDS)
    except EnvoyError as error:
        tail = str(error).strip().splitlines()
        raise HubStartError(
            f"the gateway (Envoy) did not start: {tail[-1] if tail else error}; see {data_dir / 'gateway'}"
        ) from None
    return Child("gateway", envoy.process, announced=[envoy.url], envoy=envoy)


async def start_hub(data_dir: Path, port: int, issuer: DevIssuer, parts: list[Part]) -> HubAddresses:
    """Starts every part in order into ``parts`` (so the caller can stop what started if one fails)."""
    public_port = _public_port(port)
    public_url = f"http://127.0.0.1:{public_port}"
    echo_port = _echo_port(data_dir)
    execution_port, objects_port = _free_port(), _free_port()
    base = {
        "EXTHUB_DATA_DIR": str(data_dir),
        "EXTHUB_BACKEND": "local",
        "EXTHUB_LOG_FORMAT": "json",
        "EXTHUB_PUBLIC_URL": public_url,
        # the one internal destination the hub may call: its sample extension (any publisher may register a
        # version served there; every other loopback or private address stays refused)
        "EXTHUB_EGRESS__ALLOW": f"127.0.0.1:{echo_port}",
    }

    async def steps(*specs: ChildSpec) -> list[Child]:
        """Starts independent parts side by side; each one that started is in ``children`` (to be stopped)."""

        async def one(spec: ChildSpec) -> Child:
            child = await _start(spec, data_dir)
            parts.append(_python_part(spec, child, data_dir))
            _console.print(f"[green]✓[/green] {spec.name} ready on {', '.join(child.announced)}")
            return child

        with _console.status(f"starting {', '.join(spec.name for spec in specs)}…"):
            results = await asyncio.gather(*(one(spec) for spec in specs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Child)]

    execution_address = f"127.0.0.1:{execution_port}"
    objects_url = f"http://127.0.0.1:{objects_port}"
    catalog, agent, echo = await steps(
        _service("catalog", {**base, "EXTHUB_CATALOG_PORT": "0"}, port_env="EXTHUB_CATALOG_PORT"),
        _service(
            "agent",
            {**base, "EXTHUB_AGENT_PORT": "0", "EXTHUB_EXECUTION_ADDRESS": execution_address},
            port_env="EXTHUB_AGENT_PORT",
        ),
        ChildSpec(
            "echo",
            "services.echo",
            base,
            (re.compile(r"^(http://\S+)\s*$"),),
            args=(
                "--port",
                str(echo_port),
                "--jwks-url",
                f"{objects_url}/v1/signingKeys",
                *("--extension", ECHO_EXTENSION),
                *("--extension", ECHO_PLAIN_EXTENSION),
            ),
            grpc_health=False,
        ),
    )
    (execution,) = await steps(
        _service(
            "execution",
            {
                **base,
                "EXTHUB_EXECUTION_PORT": str(execution_port),
                "EXTHUB_OBJECTS_PORT": str(objects_port),
                "EXTHUB_CATALOG_ADDRESS": catalog.address,
                "EXTHUB_AGENT_ADDRESS": agent.address,
            },
            re.compile(r"objects serving on (\S+)"),
        )
    )
    with _console.status("registering extensions/echo…"):
        await _register_echo(issuer, catalog.address, echo.address)
    upstreams = {"catalog": catalog.address, "execution": execution.address, "objects": _host_port(objects_url)}
    with _console.status("starting gateway…"):
        gateway = await _start_gateway(data_dir, public_port, upstreams)
    parts.append(Part("gateway", gateway, lambda: _start_gateway(data_dir, public_port, upstreams)))
    _console.print(f"[green]✓[/green] gateway ready on {gateway.address}")
    return HubAddresses(public_url, catalog.address, agent.address, execution.address, objects_url, echo.address)


async def run_hub(*, data_dir: Path, port: int) -> int:
    """Starts every part, prints the gateway URL, restarts a part that crashes, and stops everything on
    SIGINT/SIGTERM.

    Returns 0 after a requested stop, 1 when a part kept crashing.
    """
    started = time.monotonic()
    data_dir = _prepare_data_dir(data_dir)
    issuer = await asyncio.to_thread(DevIssuer.load_or_create, data_dir)  # before any part reads its keys
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    parts: list[Part] = []
    stopper = asyncio.create_task(stop.wait())
    try:
        starting = asyncio.create_task(start_hub(data_dir, port, issuer, parts))
        await asyncio.wait([starting, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        addresses = starting.result()
        print(addresses.public_url, flush=True)
        _console.print(
            f"hub ready in {time.monotonic() - started:.1f}s · data: {data_dir} · logs: {data_dir / 'logs'} "
            "· Ctrl-C stops it"
        )
        return await _supervise(parts, stopper, data_dir)
    finally:
        stopper.cancel()
        for part in reversed(parts):
            await _stop(part.child)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if parts:
            _console.print("hub stopped")


async def _supervise(parts: list[Part], stopper: asyncio.Task[bool], data_dir: Path) -> int:
    """Wait for a stop request (0) while restarting crashed parts; 1 when one keeps crashing."""
    while True:
        waits = {asyncio.create_task(part.child.process.wait()): part for part in parts}
        done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if stopper in done:
            return 0
        for task in done:
            part = waits[task]
            code = part.child.process.returncode
            await _stop(part.child)  # reap it: its log and output pump
            outcome = await _recover(part, code, stopper, data_dir)
            if outcome is not None:
                return outcome


async def _recover(part: Part, code: int | None, stopper: asyncio.Task[bool], data_dir: Path) -> int | None:
    """Restart a crashed part with back-off. None once it runs again; 0 if a stop was requested meanwhile;
    1 (after saying why) when it crashed or failed to start :data:`CRASH_LIMIT` times in the window."""
    reason = f"exited unexpectedly (code {code})"
    while True:
        now = time.monotonic()
        part.crashes.append(now)
        while part.crashes and part.crashes[0] < now - CRASH_WINDOW_SECONDS:
            part.crashes.popleft()
        if len(part.crashes) >= CRASH_LIMIT:
            log = (
                data_dir / "gateway" / "envoy.log" if part.name == "gateway" else data_dir / "logs" / f"{part.name}.log"
            )
            _console.print(
                f"[red]{part.name} keeps crashing ({len(part.crashes)} times in {CRASH_WINDOW_SECONDS:.0f}s; "
                f"last: {reason}); stopping the hub. See {log}[/red]"
            )
            return 1
        delay = min(RESTART_BACKOFF_SECONDS * 2 ** (len(part.crashes) - 1), RESTART_BACKOFF_MAX_SECONDS)
        _console.print(f"[yellow]{part.name} {reason}; restarting it in {delay:.2g}s[/yellow]")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopper), delay)
        if stopper.done():
            return 0
        restarting: asyncio.Task[Child] = asyncio.create_task(part.restart())
        await asyncio.wait([restarting, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not restarting.done():
            restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, HubStartError):
                await restarting
            return 0
        try:
            part.child = restarting.result()
        except HubStartError as error:
            reason = f"could not be restarted: {error}"
            continue
        _console.print(f"[green]✓[/green] {part.name} restarted on {', '.join(part.child.announced)}")
        return None
