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
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from rich.console import Console

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.cli.endpoints import remove_endpoints, write_endpoints
from exthub.contract.dev_tokens import SERVICE_TENANT, DevIssuer
from exthub.contract.roles import EXTENSIONS_PUBLISH
from gateway.envoy import EnvoyError, RunningEnvoy, start_envoy
from gateway.render import SYSTEM_CA_FILE, render_config, tracing_params
from services.echo.registration import register_echo
from services.platform.entrypoint import INTERPRETER_OPTIONS
from services.platform.settings import Settings
from services.platform.telemetry import tracing_destination
from tools.emulators.stack import API as API_AUDIENCE
from tools.emulators.stack import STACK_DIR as STACK_DIR_NAME
from tools.emulators.stack import EmulatorStack, ServiceName, has_authority, port_free
from tools.emulators.stack import user_token as emulator_user_token

ECHO_EXTENSION = "echo"
ECHO_PLAIN_EXTENSION = "echo-plain"
READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
HEALTH_CALL_TIMEOUT_SECONDS = 2.0
RESTART_BACKOFF_SECONDS = 0.25
RESTART_BACKOFF_MAX_SECONDS = 5.0
CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
PROFILE_FILE = "profile.json"
Backend = Literal["local", "azure"]
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


class WatchedProcess:
    """A child that is not ours to reap through asyncio (an emulator started by its launcher): what the
    supervision loop needs of a process, its exit observed by polling."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send_signal(self, signum: int) -> None:
        self._popen.send_signal(signum)

    async def wait(self) -> int:
        """Its exit code, once it exited (a pidfd tells the event loop; nothing polls)."""
        if self._popen.poll() is None:
            loop = asyncio.get_running_loop()
            exited = asyncio.Event()
            pidfd = os.pidfd_open(self._popen.pid)
            loop.add_reader(pidfd, exited.set)
            try:
                if self._popen.poll() is None:
                    await exited.wait()
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        return self._popen.wait()


@dataclass
class Child:
    """A started part of the hub and what it announced (one value per ``ready`` pattern)."""

    name: str
    process: asyncio.subprocess.Process | WatchedProcess
    announced: list[str] = field(default_factory=list)
    log: IO[str] | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    envoy: RunningEnvoy | None = None
    #: how to stop a part that is not a plain child process of ours (an emulator: by its launcher)
    stop_with: Callable[[], Coroutine[None, None, None]] | None = field(default=None, repr=False)

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


#: Where Linux hands out the local ports of outgoing connections, when /proc does not say.
_DEFAULT_EPHEMERAL = (32768, 60999)
#: How many ports below the ephemeral range the hub's parts take theirs from.
_PART_PORT_SPAN = 12000


def _ephemeral_ports() -> tuple[int, int]:
    """The OS's range for the local ports of outgoing connections (inclusive)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    return _DEFAULT_EPHEMERAL


def part_port_range() -> range:
    """The ports the hub's parts listen on: outside the ephemeral range, so while a part restarts on its port,
    no outgoing connection of any process can be given that port as its local end (which would make the
    restart fail to bind)."""
    low, high = _ephemeral_ports()
    below = range(max(1024, low - _PART_PORT_SPAN), low)
    above = range(high + 1, min(65536, high + 1 + _PART_PORT_SPAN))
    return below if len(below) >= len(above) else above


def _free_port() -> int:
    """A free port of :func:`part_port_range` (for a part whose address another part needs before it starts)."""
    (port,) = _free_ports(1)
    return port


def _free_ports(count: int, *, besides: tuple[int, ...] = ()) -> list[int]:
    """``count`` distinct free ports of :func:`part_port_range`, none of ``besides`` (free: a server could
    listen there now)."""
    candidates = part_port_range()
    chosen: list[int] = []
    for _ in range(100 * count):
        port = random.choice(candidates)
        if port not in chosen and port not in besides and port_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise HubStartError(f"no free port between {candidates.start} and {candidates.stop - 1} for the hub's parts")


def _public_port(port: int, *, besides: tuple[int, ...] = ()) -> int:
    if port == 0:
        (chosen,) = _free_ports(1, besides=besides)
        return chosen
    if not port_free(port):
        raise HubStartError(f"port {port} is already in use; stop what uses it or choose another with --port")
    return port


def _echo_port(data_dir: Path) -> int:
    """echo's port, kept in the data directory: the registered version's URLs must stay valid across restarts."""
    saved = data_dir / "echo.port"
    text = saved.read_text(encoding="utf-8").strip() if saved.exists() else ""
    if text.isdigit():
        port = int(text)
        if not port_free(port):
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
        *INTERPRETER_OPTIONS,
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
    assert isinstance(child.process, asyncio.subprocess.Process)
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
    if child.stop_with is not None:
        await child.stop_with()
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


def _service(name: str, env: dict[str, str], *more: re.Pattern[str]) -> ChildSpec:
    served = (re.compile(rf"{name} serving on (\S+)"), re.compile(rf"{name} http serving on (\S+)"))
    return ChildSpec(name, f"services.{name}", env, (*served, *more))


@dataclass
class Part:
    """A supervised part: the running child, how to start it again, and when it crashed lately."""

    name: str
    child: Child
    restart: Callable[[], Coroutine[None, None, Child]]
    crashes: deque[float] = field(default_factory=deque)
    log_path: Path | None = None


def _python_part(spec: ChildSpec, child: Child, data_dir: Path) -> Part:
    """A Python part, restarted on the ports it was given (its environment)."""
    return Part(spec.name, child, lambda: _start(spec, data_dir))


async def _register_echo(
    issuer: DevIssuer | str, catalog_address: str, echo_url: str, *, object_provider: str = "local/v1"
) -> None:
    """Registers ``extensions/echo`` (and ``echo-plain``, the same app without inputs) unless they exist, with a
    development token of ``issuer`` or the given bearer token (Extensions.Publish)."""
    token = (
        issuer.issue(tenant=SERVICE_TENANT, user="exthub-up", roles=[EXTENSIONS_PUBLISH], ttl_seconds=300)
        if isinstance(issuer, DevIssuer)
        else issuer
    )
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(catalog_address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        try:
            await register_echo(stub, echo_url=echo_url, metadata=metadata, object_provider=object_provider)
            await register_echo(
                stub,
                echo_url=echo_url,
                metadata=metadata,
                extension_id=ECHO_PLAIN_EXTENSION,
                with_objects=False,
                object_provider=object_provider,
            )
        except grpc.aio.AioRpcError as error:
            raise HubStartError(
                f"registering the sample extension failed: {error.code().name}: {error.details()}"
            ) from None


async def _start_gateway(data_dir: Path, port: int, addresses: dict[str, str], profile: HubProfile) -> Child:
    config = profile.gateway_config(
        data_dir,
        listen_port=port,
        catalog_address=addresses["catalog"],
        execution_address=addresses["execution"],
        objects_address=addresses["objects"],
        **tracing_params(),
    )
    try:
        envoy = await start_envoy(config, data_dir / "gateway", ready_timeout=READY_TIMEOUT_SECONDS)
    except EnvoyError as error:
        tail = str(error).strip().splitlines()
        raise HubStartError(
            f"the gateway (Envoy) did not start: {tail[-1] if tail else error}; see {data_dir / 'gateway'}"
        ) from None
    return Child("gateway", envoy.process, announced=[envoy.url], envoy=envoy)


def _emulator_part(stack: EmulatorStack, name: str) -> Part:
    """A supervised emulator: restarted on the same port by its launcher, stopped by its pid."""

    def child() -> Child:
        return Child(
            name,
            WatchedProcess(stack.popen(name)),
            announced=[stack.address(name)],
            stop_with=lambda: asyncio.to_thread(stack.stop_part, name),
        )

    async def restart() -> Child:
        try:
            await asyncio.to_thread(stack.restart_part, name)
        except (OSError, RuntimeError) as error:
            raise HubStartError(f"{name} did not start again: {str(error).splitlines()[0]}") from None
        return child()

    return Part(name, child(), restart, log_path=stack.log_path(name))


@dataclass
class HubProfile:
    """What differs between ``exthub up`` (embedded SQLite backends and the development issuer) and
    ``exthub up --backend azure [--emulators]`` (the Azure adapters, Entra ID tokens): the services' environment,
    the token that registers echo, the object provider, and the gateway's issuer.

    With ``--emulators`` the local stand-ins (:mod:`tools.emulators.stack`) are started first and supervised like
    the services; without, the Azure endpoints and issuers come from the operator's ``EXTHUB_*`` settings.
    """

    backend: Backend
    emulators: bool
    issuer: DevIssuer | None = None
    settings: Settings | None = None
    stack: EmulatorStack | None = None

    @classmethod
    async def prepare(cls, data_dir: Path, *, backend: Backend, emulators: bool) -> HubProfile:
        """Check the profile's settings and remember the profile in the data dir (for ``exthub token``)."""
        if emulators and backend != "azure":
            raise HubStartError("--emulators runs the Azure profile on local stand-ins: use it with --backend azure")
        profile = cls(backend, emulators)
        if backend == "local":
            profile.issuer = await asyncio.to_thread(DevIssuer.load_or_create, data_dir)  # before a part reads it
        elif not emulators:
            profile.settings = _azure_settings(data_dir)
        document = json.dumps({"backend": backend, "emulators": emulators})
        await asyncio.to_thread((data_dir / PROFILE_FILE).write_text, document + "\n", "utf-8")
        return profile

    @property
    def object_provider(self) -> str:
        return "az-blob/v1" if self.backend == "azure" else "local/v1"

    async def start_emulators(self, data_dir: Path, parts: list[Part]) -> None:
        """Start the stand-ins (``--emulators`` only) and put them under supervision, first in ``parts``."""
        if not self.emulators:
            return
        with _console.status("starting the Azure emulators (token authority, Cosmos DB, Azurite, Service Bus)…"):
            try:
                self.stack = await asyncio.to_thread(EmulatorStack.start, data_dir)
            except (OSError, RuntimeError) as error:
                lines = str(error).strip().splitlines()
                raise HubStartError(
                    f"the Azure emulators did not start: {lines[0] if lines else error}; "
                    f"see {data_dir / STACK_DIR_NAME}"
                ) from None
        for name in self.stack.names():
            parts.append(_emulator_part(self.stack, name))
            _console.print(f"[green]✓[/green] {name} ready on {self.stack.address(name)}")

    def environment(self) -> dict[str, str]:
        """``EXTHUB_*`` settings every service gets for this profile."""
        if self.backend == "local":
            return {"EXTHUB_BACKEND": "local"}
        if self.stack is not None:
            return self.stack.hub_environment()
        return {"EXTHUB_BACKEND": "azure"}  # everything else comes from the operator's environment

    def extension_environment(self) -> dict[str, str]:
        """What the sample extension needs besides: on the emulators, trust in the development CA (it reads and
        writes objects at Azurite's URLs, as any client does)."""
        if self.stack is None:
            return {}
        return {"SSL_CERT_FILE": str(self.stack.certificates.trust_bundle)}

    def identity(self, service: ServiceName) -> dict[str, str]:
        """The standard ``AZURE_*`` variables of ``service``'s identity (emulators; elsewhere the environment's)."""
        return self.stack.service_environment(service) if self.stack is not None else {}

    async def publisher_token(self) -> DevIssuer | str:
        """What registers echo (Extensions.Publish): the development issuer, a user token of the local token
        authority, or on Azure an Entra ID token of the operator's own login for the hub's scope."""
        if self.issuer is not None:
            return self.issuer
        if self.stack is not None:
            return await asyncio.to_thread(self.stack.user_token, roles=[EXTENSIONS_PUBLISH], user="exthub-up", ttl=300)
        assert self.settings is not None
        assert self.settings.azure.service_token_scope is not None
        return await _operator_token(self.settings.azure.service_token_scope)

    def gateway_config(self, data_dir: Path, **addresses: Any) -> dict[str, Any]:
        """The rendered Envoy configuration: the ``local`` target, or the ``azure`` target for the profile's issuer
        (the local authority's on the emulators, Entra ID's from ``EXTHUB_AUTH__*`` otherwise)."""
        if self.backend == "local":
            return render_config("local", data_dir=data_dir, **addresses)
        if self.stack is not None:
            issuer, audiences = self.stack.issuer, [API_AUDIENCE]
            ca_file = self.stack.certificates.trust_bundle
        else:
            assert self.settings is not None
            issuer, audiences = self.settings.auth.issuers[0], list(self.settings.auth.audiences)
            ca_file = SYSTEM_CA_FILE
        authority_host, tenant_id = _issuer_parts(issuer)
        return render_config(
            "azure",
            tenant_id=tenant_id,
            app_id_uri=audiences[0],
            client_id=audiences[-1],
            authority_host=authority_host,
            authority_ca_file=ca_file,
            listen_address="127.0.0.1",
            **addresses,
        )


def _issuer_parts(issuer: str) -> tuple[str, str]:
    """``(authority host[:port], tenant id)`` of an Entra-ID-shaped v2.0 issuer ``https://HOST/TENANT/v2.0``."""
    match = re.fullmatch(r"https://([^/]+)/([^/]+)/v2\.0/?", issuer)
    if match is None:
        raise HubStartError(
            f"EXTHUB_AUTH__ISSUERS must start with an Entra ID v2.0 issuer (https://HOST/TENANT/v2.0), got {issuer!r}"
        )
    return match.group(1), match.group(2)


def _azure_settings(data_dir: Path) -> Settings:
    """The operator's Azure settings (``EXTHUB_*`` from the environment), validated; a clear error otherwise."""
    try:
        settings = Settings(backend="azure", data_dir=data_dir)
        settings.require_backend()  # every service runs here: every endpoint
    except ValidationError as error:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        raise HubStartError(f"the Azure profile's settings are incomplete: {reasons}") from None
    except ValueError as error:
        raise HubStartError(f"the Azure profile's settings are incomplete: {error}") from None
    if not settings.auth.issuers:
        raise HubStartError("the Azure profile needs EXTHUB_AUTH__ISSUERS (the Entra ID v2.0 issuer)")
    _issuer_parts(settings.auth.issuers[0])
    return settings


async def _operator_token(scope: str) -> str:
    """An Entra ID token for ``scope`` from the operator's own login (``DefaultAzureCredential``)."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity.aio import DefaultAzureCredential

    try:
        async with DefaultAzureCredential() as credential, asyncio.timeout(30):
            return (await credential.get_token(scope)).token
    except (ClientAuthenticationError, TimeoutError) as error:
        raise HubStartError(
            f"registering echo needs a token for {scope} (with the Extensions.Publish app role) from your Azure "
            f"login: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None


def profile_user_token(
    data_dir: Path, *, backend: Backend | None, roles: list[str], tenant: str | None, user: str, ttl: int
) -> str:
    """What ``exthub token`` prints for the profile the hub of ``data_dir`` runs (or ``backend``): a development
    token, or on the emulator profile a user token of the local token authority. Raises HubStartError when
    there is nothing to mint with (real Entra ID issues user tokens itself)."""
    recorded = _recorded_profile(data_dir)
    chosen = backend or recorded.get("backend", "local")
    if chosen == "local":
        data_dir.mkdir(parents=True, exist_ok=True)
        issuer = DevIssuer.load_or_create(data_dir)
        return issuer.issue(tenant=tenant or "local", user=user, roles=roles, ttl_seconds=ttl)
    if not has_authority(data_dir):
        raise HubStartError(
            "tokens for the Azure profile come from Entra ID (for example `az account get-access-token --scope "
            "<EXTHUB_AZURE__SERVICE_TOKEN_SCOPE>`); only `exthub up --backend azure --emulators` has a local "
            f"token authority, and {data_dir} has none yet"
        )
    return emulator_user_token(data_dir, roles=roles, tenant=tenant, user=user, ttl=ttl)


def _recorded_profile(data_dir: Path) -> dict[str, Any]:
    try:
        document = json.loads((data_dir / PROFILE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


async def start_hub(data_dir: Path, port: int, profile: HubProfile, parts: list[Part]) -> HubAddresses:
    """Starts every part in order into ``parts`` (so the caller can stop what started if one fails)."""
    echo_port = _echo_port(data_dir)
    public_port = _public_port(port, besides=(echo_port,))
    public_url = f"http://127.0.0.1:{public_port}"
    # every part's ports chosen here, kept across its restarts (the others and endpoints.json stay right)
    execution_port, objects_port, catalog_port, catalog_http_port, agent_port, agent_http_port = _free_ports(
        6, besides=(echo_port, public_port)
    )
    await profile.start_emulators(data_dir, parts)
    base = {
        **profile.environment(),
        "EXTHUB_DATA_DIR": str(data_dir),
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
        _service(
            "catalog",
            {
                **base,
                **profile.identity("catalog"),
                "EXTHUB_CATALOG_PORT": str(catalog_port),
                "EXTHUB_CATALOG_HTTP_PORT": str(catalog_http_port),
            },
        ),
        _service(
            "agent",
            {
                **base,
                **profile.identity("agent"),
                "EXTHUB_AGENT_PORT": str(agent_port),
                "EXTHUB_AGENT_HTTP_PORT": str(agent_http_port),
                "EXTHUB_EXECUTION_ADDRESS": execution_address,
            },
        ),
        ChildSpec(
            "echo",
            "services.echo",
            {**base, **profile.extension_environment()},
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
                **profile.identity("execution"),
                "EXTHUB_EXECUTION_PORT": str(execution_port),
                "EXTHUB_OBJECTS_PORT": str(objects_port),
                "EXTHUB_CATALOG_ADDRESS": catalog.address,
                "EXTHUB_AGENT_ADDRESS": agent.address,
            },
            re.compile(r"objects serving on (\S+)"),
        )
    )
    with _console.status("registering extensions/echo…"):
        await _register_echo(
            await profile.publisher_token(), catalog.address, echo.address, object_provider=profile.object_provider
        )
    upstreams = {"catalog": catalog.address, "execution": execution.address, "objects": _host_port(objects_url)}
    with _console.status("starting gateway…"):
        gateway = await _start_gateway(data_dir, public_port, upstreams, profile)
    parts.append(Part("gateway", gateway, lambda: _start_gateway(data_dir, public_port, upstreams, profile)))
    _console.print(f"[green]✓[/green] gateway ready on {gateway.address}")
    return HubAddresses(public_url, catalog.address, agent.address, execution.address, objects_url, echo.address)


def traces_destination(data_dir: Path) -> str | None:
    """Where the hub's parts send traces, in words (None: tracing off): OTLP from the standard ``OTEL_*``
    variables, and Azure Monitor when ``EXTHUB_TELEMETRY__AZURE_MONITOR`` is set (read by the settings model, as
    the services read it)."""
    return tracing_destination(azure_monitor=Settings(data_dir=data_dir).telemetry.azure_monitor)


async def run_hub(*, data_dir: Path, port: int, backend: Backend = "local", emulators: bool = False) -> int:
    """Starts every part, prints the gateway URL, restarts a part that crashes, and stops everything on
    SIGINT/SIGTERM. ``backend``/``emulators``: the profile (see :class:`HubProfile`).

    Returns 0 after a requested stop, 1 when a part kept crashing.
    """
    started = time.monotonic()
    data_dir = _prepare_data_dir(data_dir)
    profile = await HubProfile.prepare(data_dir, backend=backend, emulators=emulators)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    parts: list[Part] = []
    stopper = asyncio.create_task(stop.wait())
    try:
        starting = asyncio.create_task(start_hub(data_dir, port, profile, parts))
        await asyncio.wait([starting, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        addresses = starting.result()
        traces = traces_destination(data_dir)

        def publish_endpoints() -> Path:
            parts_now = [(part.name, part.child.process.pid, part.child.announced) for part in parts]
            return write_endpoints(data_dir, url=addresses.public_url, tracing=traces, parts=parts_now)

        endpoints = publish_endpoints()
        print(addresses.public_url, flush=True)
        _console.print(
            f"hub ready in {time.monotonic() - started:.1f}s · data: {data_dir} · logs: {data_dir / 'logs'} "
            f"· endpoints: {endpoints} · Ctrl-C stops it"
        )
        _console.print(f"traces: {traces or 'tracing off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them)'}")
        return await _supervise(parts, stopper, data_dir, publish_endpoints)
    finally:
        stopper.cancel()
        remove_endpoints(data_dir)
        for part in reversed(parts):
            await _stop(part.child)
        if profile.stack is not None:
            await asyncio.to_thread(profile.stack.stop)  # every emulator stopped already: forgets their pids
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if parts:
            _console.print("hub stopped")


async def _supervise(
    parts: list[Part], stopper: asyncio.Task[bool], data_dir: Path, on_restart: Callable[[], object] = lambda: None
) -> int:
    """Wait for a stop request (0) while restarting crashed parts (then ``on_restart``); 1 when one keeps
    crashing."""
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
            on_restart()


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
            log = part.log_path or (
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
