"""A real hub on loopback for tests: catalog + execution + agent (services.agent) + the echo extension.

Real SQLite files under ``data_dir``; the agent signs extension request bodies through the execution service's
``SignExtensionRequest`` with its own production signer and Agent token, so the whole path is the production one.
Used by the execution, gateway and CLI component tests: ``async with running_hub(data_dir, issuer) as hub``.

Profiles: ``embedded`` (SQLite files, the development issuer) or, with ``azure=`` an
:class:`~tests.support.azure_hub.AzureHubProfile`, the Azure adapters on the session's emulator stack (a fresh
Cosmos DB database, blob container and Service Bus namespace per hub; tokens of the local token authority; echo
registered with ``az-blob/v1``).

Asynchronous executions: the execution service always dispatches QUEUED attempts to the work queue in
``data_dir`` (``hub.settings.queue_path``); nothing consumes it unless ``agent_worker=True`` (the in-process
agent runs its queue worker) or the test starts real agent processes with :func:`start_agent_process`
(``python -m services.agent``, stopped by pid). ``hub.echo_calls`` records every call echo received and
whether it completed or was aborted by the caller (echo runs with handler cancellation on), with the body and
``Exthub-Signature`` it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.protobuf import struct_pb2

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc, resources_pb2
from exthub.client import is_terminal_state
from exthub.contract.dev_tokens import DevIssuer, TokenSource
from exthub.contract.roles import EXECUTIONS_RUN, EXTENSIONS_PUBLISH
from exthub.execution.v1 import (
    agent_task_service_pb2_grpc,
    execution_pb2,
    execution_service_pb2,
    execution_service_pb2_grpc,
)
from exthub.type.v1 import types_pb2
from services.agent.app import AgentApp, start_agent
from services.catalog.app import CatalogApp, start_catalog
from services.echo.app import create_echo_app
from services.echo.registration import register_echo
from services.echo.signature import HttpJwksSource
from services.execution.adapters.agent import GrpcAgentClient, dev_service_tokens
from services.execution.app import ExecutionApp, start_execution
from services.execution.domain.model import Execution
from services.execution.handlers.ports import AttemptOutcome, AttemptTask
from services.platform.settings import Settings
from tests.support.azure_hub import AzureHubProfile

if TYPE_CHECKING:
    from exthub.execution.v1.agent_task_service_pb2_grpc import AgentTaskServiceAsyncStub
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

Metadata = tuple[tuple[str, str], ...]
TokenFactory = Callable[..., Metadata]
RUN = (EXECUTIONS_RUN,)


@dataclass
class EchoCall:
    """One request echo received: which attempt, its status-update key (the attempt's proof for reports),
    and how it ended (``running``, ``completed``, ``aborted``)."""

    path: str
    execution_id: str
    attempt: int
    outcome: str = "running"
    status: int = 0
    status_update_key: str = field(default="", repr=False)
    signature: str = ""
    body: bytes = b""


@dataclass
class Hub:
    catalog: CatalogApp
    agent: AgentApp
    execution: ExecutionApp
    echo_url: str
    stub: ExecutionServiceAsyncStub
    tasks: AgentTaskServiceAsyncStub
    token: TokenFactory
    settings: Settings | None = None
    echo: EchoRecorder = field(default_factory=lambda: EchoRecorder())
    azure: AzureHubProfile | None = None

    @property
    def profile(self) -> str:
        """``embedded`` or ``azure``."""
        return "embedded" if self.azure is None else "azure"

    @property
    def echo_calls(self) -> list[EchoCall]:
        """Every call echo received, in arrival order."""
        return self.echo.calls

    def calls_of(self, execution_name: str) -> list[EchoCall]:
        """The calls echo received for one execution, in arrival order."""
        return self.echo.calls_of(execution_name)

    async def publish(
        self, extension_id: str, version: resources_pb2.ExtensionVersion, *, display_name: str = "T"
    ) -> str:
        """Create extension ``extension_id`` with ``version`` as its 1.0.0 (as a publisher); the version's name."""
        publisher = self.token(roles=(EXTENSIONS_PUBLISH,))
        async with grpc.aio.insecure_channel(self.catalog.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            await stub.CreateExtension(
                catalog_service_pb2.CreateExtensionRequest(
                    extension_id=extension_id,
                    extension=resources_pb2.Extension(display_name=display_name, publisher="T"),
                ),
                metadata=publisher,
                timeout=10,
            )
            await stub.CreateExtensionVersion(
                catalog_service_pb2.CreateExtensionVersionRequest(
                    parent=f"extensions/{extension_id}", version_id="1.0.0", version=version
                ),
                metadata=publisher,
                timeout=10,
            )
        return f"extensions/{extension_id}/versions/1.0.0"


class EchoRecorder:
    """The calls echo received (``calls``), with a wake-up on every change for :meth:`wait_until`."""

    def __init__(self) -> None:
        self.calls: list[EchoCall] = []
        self._changed = asyncio.Event()

    def calls_of(self, execution_name: str) -> list[EchoCall]:
        """The calls of one execution, in arrival order."""
        execution_id = execution_name.removeprefix("executions/")
        return [call for call in self.calls if call.execution_id == execution_id]

    def changed(self) -> None:
        """Wake every :meth:`wait_until`."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_until(self, condition: Callable[[], bool], *, within: float = 10.0) -> None:
        """Return once ``condition()`` holds; TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within):
            while not condition():
                await self._changed.wait()


def _recorder(recorder: EchoRecorder) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that records each POST to echo and how it ended."""

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method != "POST":
            return await handler(request)
        try:
            document: Any = json.loads(await request.read())
        except ValueError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        call = EchoCall(
            request.path,
            str(document.get("executionId", "")),
            int(document.get("attempt") or 0),
            status_update_key=str(document.get("statusUpdateKey", "")),
            signature=request.headers.get("Exthub-Signature", ""),
            body=await request.read(),
        )
        recorder.calls.append(call)
        recorder.changed()
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            call.outcome = "aborted"  # the caller went away (handler cancellation)
            raise
        except web.HTTPException as exc:
            call.outcome, call.status = "completed", exc.status
            raise
        finally:
            recorder.changed()
        call.outcome, call.status = "completed", response.status
        recorder.changed()
        return response

    return record


def token_factory(issuer: DevIssuer) -> TokenFactory:
    """``token(roles=[...], tenant=..., user=...)`` → call metadata with a development bearer token."""

    def make(*, roles: tuple[str, ...] = RUN, tenant: str = "tenant-a", user: str = "user-1") -> Metadata:
        return (("authorization", f"Bearer {issuer.issue(tenant=tenant, user=user, roles=list(roles))}"),)

    return make


def base_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings with every port chosen by the OS: the local backend unless ``overrides`` say otherwise."""
    values: dict[str, Any] = {
        "backend": "local",
        "data_dir": data_dir,
        "catalog_port": 0,
        "execution_port": 0,
        "agent_port": 0,
        "objects_port": 0,
        "log_format": "console",
    }
    return Settings(**{**values, **overrides})


class LateAgentClient:
    """The execution service's agent port, connected once the agent (which needs the execution service's
    address for its worker) has started."""

    def __init__(self, data_dir: Path) -> None:
        self._tokens: TokenSource = dev_service_tokens(data_dir)
        self._client: GrpcAgentClient | None = None

    def connect(self, address: str, tokens: TokenSource | None = None) -> None:
        """Call ``address`` with ``tokens`` (default: development Agent tokens)."""
        self._client = GrpcAgentClient(address, tokens or self._tokens)

    async def execute(self, task: AttemptTask, *, timeout_seconds: float) -> AttemptOutcome:
        assert self._client is not None, "the agent has not started"
        return await self._client.execute(task, timeout_seconds=timeout_seconds)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@contextlib.asynccontextmanager
async def running_hub(
    data_dir: Path,
    issuer: DevIssuer,
    *,
    agent_worker: bool = False,
    azure: AzureHubProfile | None = None,
    **overrides: Any,
) -> AsyncIterator[Hub]:
    """Starts the hub's services and echo (registered as ``echo`` and ``echo-plain``); stops them on exit.

    ``overrides`` are settings (e.g. ``execution_sweep_seconds=0.1``); ``agent_worker`` runs the in-process
    agent's queue worker (off by default: tests that drive the queue by hand, or start agent processes).
    ``azure``: run on the Azure profile (see the module docstring); ``issuer`` is then unused.
    """
    environ: Mapping[str, str] | None = None
    if azure is not None:
        overrides = {**(await azure.isolated()), **overrides}
        environ = azure.environ
        token = azure.token_factory()
    else:
        token = token_factory(issuer)
    # echo listens first: the hub allow-lists its address (the only internal destination it may call), as
    # `exthub up` does; its JWKS URL is known once the execution service runs
    recorder = EchoRecorder()
    jwks = HttpJwksSource("")
    echo_app = create_echo_app(jwks)
    echo_app.middlewares.insert(0, _recorder(recorder))
    runner = web.AppRunner(echo_app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    echo_url = f"http://127.0.0.1:{port}"
    overrides.setdefault("egress", {"allow": [f"127.0.0.1:{port}"]})
    settings = base_settings(data_dir, **overrides)
    catalog = await start_catalog(settings, port=0, environ=environ)
    agent_port = LateAgentClient(data_dir)
    execution_settings = base_settings(data_dir, catalog_address=catalog.address, **overrides)
    execution = await start_execution(execution_settings, port=0, agent=agent_port, environ=environ)
    agent = await start_agent(
        base_settings(data_dir, execution_address=execution.address, **overrides),
        port=0,
        worker=agent_worker,
        environ=environ,
    )
    service_tokens = None if azure is None else await execution.backends.service_tokens(user="execution-service")
    agent_port.connect(agent.address, service_tokens)
    jwks.url = f"{execution.http_url}/v1/signingKeys"
    try:
        async with (
            grpc.aio.insecure_channel(catalog.address) as catalog_channel,
            grpc.aio.insecure_channel(execution.address) as channel,
        ):
            catalog_stub = catalog_service_pb2_grpc.CatalogServiceStub(catalog_channel)
            publisher = token(roles=(EXTENSIONS_PUBLISH,))
            provider = execution.backends.object_provider_name
            await register_echo(catalog_stub, echo_url=echo_url, metadata=publisher, object_provider=provider)
            await register_echo(
                catalog_stub,
                echo_url=echo_url,
                metadata=publisher,
                extension_id="echo-plain",
                with_objects=False,
                object_provider=provider,
            )
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            tasks = agent_task_service_pb2_grpc.AgentTaskServiceStub(channel)
            yield Hub(catalog, agent, execution, echo_url, stub, tasks, token, execution_settings, recorder, azure)
    finally:
        await runner.cleanup()
        await agent.stop(0)
        await execution.stop(0)
        await agent_port.close()
        await catalog.stop(0)


#: Small worker knobs so the asynchronous tests run in seconds (lease 1 s, heartbeat 0.2 s).
FAST_AGENT_ENV: Mapping[str, str] = {
    "EXTHUB_AGENT_LEASE_SECONDS": "1.0",
    "EXTHUB_AGENT_HEARTBEAT_SECONDS": "0.2",
    "EXTHUB_AGENT_RECEIVE_WAIT_SECONDS": "0.5",
    "EXTHUB_QUEUE_POLL_SECONDS": "0.02",
    "EXTHUB_SHUTDOWN_GRACE_SECONDS": "1",
}
ASYNC_CALL_TIMEOUT_SECONDS = 10.0
_READY = re.compile(r"agent serving on (\S+)")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AgentProcess:
    """A real agent process (``python -m services.agent``) with its queue worker; logs go to ``log_path``."""

    agent_id: str
    process: asyncio.subprocess.Process
    address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What the process has logged so far (stderr, structured)."""
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL (a crash: no drain, no report) and reap."""
        if self.process.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM by pid and wait; SIGKILL if it does not exit in ``STOP_TIMEOUT_SECONDS``."""
        if self.process.returncode is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await self.process.wait()
        except TimeoutError:
            await self.kill()


async def start_agent_process(
    data_dir: Path,
    execution_address: str,
    agent_id: str,
    *,
    log_dir: Path,
    env: Mapping[str, str] = FAST_AGENT_ENV,
    slots: int = 1,
    egress_allow: Sequence[str] = (),
    backend_env: Mapping[str, str] | None = None,
) -> AgentProcess:
    """Start ``python -m services.agent`` on loopback for the hub of ``data_dir`` and wait until it serves.

    The environment is exactly what an operator sets ("More agents on one machine" in ``docs/architecture.md``):
    data dir, local backend, an OS-chosen port, the execution service's address, the agent id and the worker knobs.
    """
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("EXTHUB_")}
    child_env.update(
        {
            "EXTHUB_DATA_DIR": str(data_dir),
            "EXTHUB_BACKEND": "local",
            "EXTHUB_HOST": "127.0.0.1",
            "EXTHUB_AGENT_PORT": "0",
            "EXTHUB_EXECUTION_ADDRESS": execution_address,
            "EXTHUB_AGENT_ID": agent_id,
            "EXTHUB_AGENT_WORKER_SLOTS": str(slots),
            "EXTHUB_LOG_FORMAT": "json",
            "EXTHUB_EGRESS__ALLOW": ",".join(egress_allow),
            **env,
            **(backend_env or {}),
        }
    )
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    log_path = log_dir / f"{agent_id}.log"
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.agent",
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            env=child_env,
            cwd=_REPO_ROOT,
        )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            address = await _ready_address(process.stdout, log_path)
        return AgentProcess(agent_id, process, address, log_path)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


async def _ready_address(stdout: asyncio.StreamReader, log_path: Path) -> str:
    """The address of the ``agent serving on ADDRESS`` line; RuntimeError when the output ends first."""
    while line := (await stdout.readline()).decode("utf-8", errors="replace"):
        match = _READY.search(line)
        if match:
            return match.group(1)
    raise RuntimeError(f"the agent exited before serving; see {log_path}")


@dataclass
class AgentCluster:
    """A running hub, real agent processes (``agent_ids``) consuming its queue, and the executions created
    through :meth:`create` (for the invariant checker). ``version``/``short_version`` are the extension
    versions the tests run."""

    hub: Hub
    data_dir: Path
    log_dir: Path
    agent_ids: tuple[str, ...]
    version: str
    short_version: str = ""
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    @property
    def execution_address(self) -> str:
        return self.hub.execution.address

    async def ensure_agents(self) -> None:
        """Restart any agent process that is gone (a test may have killed one)."""
        for agent_id in self.agent_ids:
            current = self.agents.get(agent_id)
            if current is None or current.process.returncode is not None:
                self.agents[agent_id] = await start_agent_process(
                    self.data_dir,
                    self.execution_address,
                    agent_id,
                    log_dir=self.log_dir,
                    egress_allow=self.hub.settings.egress.allow if self.hub.settings else (),
                    backend_env=self.backend_env(),
                )

    def backend_env(self) -> dict[str, str]:
        """What an agent process of this hub needs to reach its backends: nothing more on the embedded profile (the
        data dir), the Azure settings and the agent identity on the Azure one."""
        if self.hub.azure is None or self.hub.settings is None:
            return {}
        return self.hub.azure.process_environment(self.hub.settings)

    async def create(
        self,
        *,
        request: struct_pb2.Struct | None = None,
        priority: types_pb2.Priority.ValueType = types_pb2.NORMAL,
        profile: str = "async",
        version: str = "",
    ) -> execution_pb2.Execution:
        execution = await self.hub.stub.CreateExecution(
            execution_service_pb2.CreateExecutionRequest(
                execution=execution_pb2.Execution(
                    extension_version=version or self.version, profile=profile, priority=priority, request=request
                )
            ),
            metadata=self.hub.token(),
            timeout=ASYNC_CALL_TIMEOUT_SECONDS,
        )
        self.created.append(execution.name)
        return execution

    async def get(self, name: str) -> execution_pb2.Execution:
        return await self.hub.stub.GetExecution(
            execution_service_pb2.GetExecutionRequest(name=name),
            metadata=self.hub.token(),
            timeout=ASYNC_CALL_TIMEOUT_SECONDS,
        )

    async def wait_for(
        self, name: str, done: Callable[[execution_pb2.Execution], bool], *, within: float = 15.0
    ) -> execution_pb2.Execution:
        """Poll GetExecution until ``done`` holds (waits on the hub's watch notifier between polls)."""
        execution_id = name.removeprefix("executions/")
        notifier = self.hub.execution.context.repository.notifier
        async with asyncio.timeout(within):
            while True:
                armed = notifier.arm(execution_id)
                execution = await self.get(name)
                if done(execution):
                    return execution
                await notifier.wait(execution_id, 0.05, armed)

    async def wait_terminal(self, name: str, *, within: float = 15.0) -> execution_pb2.Execution:
        return await self.wait_for(name, lambda e: is_terminal_state(e.state), within=within)

    async def events(self, name: str) -> list[execution_pb2.ExecutionEvent]:
        response = await self.hub.stub.ListExecutionEvents(
            execution_service_pb2.ListExecutionEventsRequest(parent=name, page_size=1000),
            metadata=self.hub.token(),
            timeout=ASYNC_CALL_TIMEOUT_SECONDS,
        )
        return list(response.events)

    async def stored(self, name: str) -> Execution:
        """The stored execution (for what the API does not show, e.g. the claiming agent)."""
        return await self.hub.execution.context.repository.get(name.removeprefix("executions/"))
