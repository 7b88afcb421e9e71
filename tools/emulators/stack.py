"""The emulator profile's local stand-ins, started and stopped together (development and tests only; never shipped).

``exthub up --backend azure --emulators`` runs the hub on the Azure adapters against these child processes, all on
``127.0.0.1``, OS-chosen ports, HTTPS/AMQPS with one development CA (:mod:`tools.emulators.certs`):

- the **token authority** (:mod:`tools.emulators.token_authority`): plays Entra ID for the three service identities
  (``catalog``, ``execution``, ``agent``, each with a federated service-account token it keeps fresh in a file, as
  AKS projects it) and for the hub's users (``exthub token``); its port is kept in the data dir so the issuer, and
  the tokens it signed, survive a restart;
- the **Cosmos DB emulator** (:mod:`tools.emulators.cosmos`), in memory;
- **Azurite** (:mod:`tools.emulators.azurite`), Blob Storage with ``--oauth basic``, in memory;
- the **Service Bus test broker** (:mod:`tools.emulators.servicebus_broker`, a test double of Service Bus over
  AMQPS), with the topics and subscriptions Terraform creates, in memory.

The services get the standard variables only (``AZURE_AUTHORITY_HOST``, ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``,
``AZURE_FEDERATED_TOKEN_FILE``, ``SSL_CERT_FILE``) and ``EXTHUB_*`` settings naming the endpoints
(:meth:`EmulatorStack.hub_environment`, :meth:`EmulatorStack.service_environment`): no key anywhere, the production
code paths. Everything lives under ``<data_dir>/emulators/``; ``stack.json`` there records the pids and endpoints,
so a later start first stops what a killed ``exthub up`` left running (by pid, after checking the process is
this stack's). The emulators keep nothing across restarts: a restarted stack is empty (the hub registers echo
again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from azure.identity.aio import WorkloadIdentityCredential

from exthub.contract.keyfiles import replace_atomically
from tools.emulators import certs as dev_certs
from tools.emulators._process import ChildProcess, spawn
from tools.emulators.azurite import AzuriteProcess, create_container
from tools.emulators.cosmos import CosmosEmulator, start_cosmos_emulator
from tools.emulators.token_authority import (
    AuthorityConfig,
    ClientConfig,
    ResourceConfig,
    TokenAuthorityProcess,
    authority_state,
    mint_user_token,
)

__all__ = [
    "API",
    "API_SCOPE",
    "SERVICE_CLIENTS",
    "STACK_DIR",
    "TENANT_ID",
    "EmulatorStack",
    "ServiceName",
    "authority_config",
    "port_free",
    "stop_leftovers",
    "user_token",
]

STACK_DIR = "emulators"
STATE_FILE = "stack.json"
AUTHORITY_PORT_FILE = "authority.port"
TENANT_ID = "7d3e5c1a-0b2f-4e6d-9a8c-1f2e3d4c5b6a"
API = "api://exthub"
API_SCOPE = f"{API}/.default"
COSMOS_DATABASE = "exthub"
BLOB_CONTAINER = "exthub-objects"
ServiceName = Literal["catalog", "execution", "agent"]


@dataclass(frozen=True)
class ServiceClient:
    """A service's Entra ID application (as Terraform creates it): client and object id, app roles."""

    client_id: str
    object_id: str
    roles: tuple[str, ...]

    def subject(self, service: str) -> str:
        return f"system:serviceaccount:exthub:{service}"


#: One identity per service; the execution service and the agent hold the app role ``Agent`` (they call each
#: other), the catalog holds none.
SERVICE_CLIENTS: Mapping[ServiceName, ServiceClient] = {
    "catalog": ServiceClient("1c4a7e2b-5d8f-4a3c-9e6b-2f1d0c9b8a71", "5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c11", ()),
    "execution": ServiceClient(
        "2d5b8f3c-6e9a-4b4d-8f7c-3a2e1d0c9b82", "6f5e4d3c-2b1a-4f0e-9d8c-7b6a5f4e3d22", ("Agent",)
    ),
    "agent": ServiceClient("3e6c9a4d-7f0b-4c5e-9a8d-4b3f2e1d0c93", "7a6f5e4d-3c2b-4a1f-8e9d-8c7b6a5f4e33", ("Agent",)),
}


def authority_config() -> AuthorityConfig:
    """The emulator profile's tenant: the three service applications, the hub's API, the Cosmos DB account."""
    return AuthorityConfig(
        tenant_id=TENANT_ID,
        clients=tuple(
            ClientConfig(c.client_id, c.object_id, roles=c.roles, federated_subjects=(c.subject(name),))
            for name, c in SERVICE_CLIENTS.items()
        ),
        # the account's own resource, as Cosmos DB accounts have (the SDK asks for https://<account host>/.default)
        resources=(ResourceConfig(API), ResourceConfig("https://127.0.0.1", version=1, app_roles=False)),
    )


_BROKER_READY = re.compile(r'\{"host": "127\.0\.0\.1", "port": ([0-9]+)\}')


def _start_broker(directory: Path, port: int, args: tuple[str, ...], timeout: float = 30.0) -> tuple[ChildProcess, int]:
    """The Service Bus test broker on ``port`` (0: the OS chooses), its output in ``servicebus/broker.log``."""
    log_path = directory / "servicebus" / "broker.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    argv = [
        sys.executable,
        "-m",
        "tools.emulators.servicebus_broker",
        "--port",
        str(port),
        "--certs",
        str(directory / "certs"),
        *args,
    ]
    child = spawn("Service Bus test broker", argv, log_path=log_path)
    match = child.wait_for_line(_BROKER_READY, timeout, offset=offset)
    return child, int(match.group(1))


def _token_file(directory: Path, service: str) -> Path:
    return directory / "tokens" / f"{service}.token"


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now. ``SO_REUSEADDR`` as the servers themselves use
    it: a port whose last connections linger in TIME_WAIT (a server just stopped) is free; one something listens
    on is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kept_port(path: Path) -> int:
    """The port kept in ``path`` when it is free again, else 0 (the OS chooses)."""
    text = path.read_text(encoding="utf-8").strip() if path.exists() else ""
    return int(text) if text.isdigit() and port_free(int(text)) else 0


@dataclass
class EmulatorStack:
    """The running stand-ins of one data dir (see the module docstring). Build with :meth:`start`."""

    directory: Path
    certificates: dev_certs.DevCertificates
    authority: TokenAuthorityProcess
    cosmos: CosmosEmulator
    azurite: AzuriteProcess
    broker: ChildProcess
    broker_port: int
    broker_args: tuple[str, ...] = ()
    _stopped: bool = field(default=False, repr=False)

    # -- starting and stopping -------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        progress: Callable[[str], None] = lambda _: None,
        broker_lock_seconds: float | None = None,
    ) -> EmulatorStack:
        """Start every stand-in side by side and wait until each is ready (blocking: from asyncio use a thread).

        ``broker_lock_seconds`` shortens the broker's lock duration (tests: a lost agent's message comes back
        sooner); by default it is the subscriptions' (60 s, as Terraform sets them).

        What a previous, killed run left running is stopped first. If one fails to start, those that started are
        stopped and the error (:class:`tools.emulators._process.EmulatorStartError` or
        :class:`tools.emulators.cosmos.CosmosEmulatorError`) is raised.
        """
        directory = (data_dir / STACK_DIR).resolve()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stop_leftovers(data_dir)
        certificates = dev_certs.load_or_create(directory / "certs")
        authority_dir = directory / "authority"

        def authority() -> TokenAuthorityProcess:
            port_file = directory / AUTHORITY_PORT_FILE
            started = TokenAuthorityProcess.start(
                authority_dir,
                authority_config(),
                certs_dir=directory / "certs",
                port=_kept_port(port_file),
                federated_tokens={c.client_id: _token_file(directory, n) for n, c in SERVICE_CLIENTS.items()},
            )
            port_file.write_text(f"{started.url.rsplit(':', 1)[1]}\n", encoding="utf-8")
            progress(f"token authority ready on {started.url}")
            return started

        def cosmos() -> CosmosEmulator:
            started = start_cosmos_emulator(directory / "cosmos", certificates=certificates)
            progress(f"Cosmos DB emulator ready on {started.endpoint}")
            return started

        def azurite() -> AzuriteProcess:
            started = AzuriteProcess.start(directory / "azurite", certs_dir=directory / "certs")
            progress(f"Azurite ready on {started.account_url}")
            return started

        broker_args = () if broker_lock_seconds is None else ("--lock-duration", str(broker_lock_seconds))

        def broker() -> tuple[ChildProcess, int]:
            started = _start_broker(directory, 0, broker_args)
            progress(f"Service Bus test broker ready on 127.0.0.1:{started[1]}")
            return started

        with concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="emulator-start") as pool:
            started_authority = pool.submit(authority)
            started_cosmos = pool.submit(cosmos)
            started_azurite = pool.submit(azurite)
            started_broker = pool.submit(broker)
        futures: list[concurrent.futures.Future[Any]] = [
            started_authority,
            started_cosmos,
            started_azurite,
            started_broker,
        ]
        failure = next((f.exception() for f in futures if f.exception() is not None), None)
        if failure is not None:
            for future in futures:
                if future.exception() is None:
                    result = future.result()
                    (result[0] if isinstance(result, tuple) else result).stop()
            raise failure
        broker_child, broker_port = started_broker.result()
        stack = cls(
            directory,
            certificates,
            started_authority.result(),
            started_cosmos.result(),
            started_azurite.result(),
            broker_child,
            broker_port,
            broker_args,
        )
        try:
            stack.provision_storage(BLOB_CONTAINER)
        except BaseException:
            stack.stop()
            raise
        stack.save()
        return stack

    def provision_storage(self, container: str) -> None:
        """Create the blob container (what Terraform does in Azure), as the execution identity, with a token from
        the authority (blocking)."""
        client = SERVICE_CLIENTS["execution"]

        async def create() -> None:
            async with WorkloadIdentityCredential(
                tenant_id=TENANT_ID,
                client_id=client.client_id,
                token_file_path=str(_token_file(self.directory, "execution")),
                authority=self.authority.url,
                connection_verify=str(self.certificates.ca_cert),
            ) as credential:
                await create_container(
                    self.azurite.account_url,
                    container,
                    credential,
                    connection_verify=str(self.certificates.ca_cert),
                )

        # its own thread and loop: callable from synchronous code that runs inside an event loop (fixtures)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="provision") as pool:
            pool.submit(asyncio.run, create()).result()

    def names(self) -> tuple[str, ...]:
        """The stand-ins, in start order."""
        return ("token-authority", "cosmos", "azurite", "servicebus")

    def parts(self) -> dict[str, int]:
        """``{name: pid}`` of the running stand-ins."""
        return {name: self.popen(name).pid for name in self.names()}

    def popen(self, name: str) -> subprocess.Popen[bytes]:
        """The process of stand-in ``name``."""
        if name == "token-authority":
            return self.authority.child.popen
        if name == "cosmos":
            return self.cosmos.process
        if name == "azurite":
            return self.azurite.child.popen
        if name == "servicebus":
            return self.broker.popen
        raise KeyError(name)

    def address(self, name: str) -> str:
        """Where stand-in ``name`` listens."""
        return {
            "token-authority": self.authority.url,
            "cosmos": self.cosmos.endpoint,
            "azurite": self.azurite.account_url,
            "servicebus": f"amqps://127.0.0.1:{self.broker_port}",
        }[name]

    def log_path(self, name: str) -> Path:
        """The log of stand-in ``name``."""
        return {
            "token-authority": self.authority.child.log_path,
            "cosmos": self.cosmos.log_path,
            "azurite": self.azurite.child.log_path,
            "servicebus": self.broker.log_path,
        }[name]

    def pause(self, name: str) -> None:
        """Freeze stand-in ``name`` (SIGSTOP): it keeps its port and its state but answers nothing (fault tests)."""
        os.kill(self.popen(name).pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Let a paused stand-in run again (SIGCONT), its state intact."""
        os.kill(self.popen(name).pid, signal.SIGCONT)

    def stop_part(self, name: str) -> None:
        """Stop stand-in ``name`` by its pid (idempotent)."""
        if name == "token-authority":
            self.authority.stop()
        elif name == "cosmos":
            self.cosmos.stop()
        elif name == "azurite":
            self.azurite.stop()
        elif name == "servicebus":
            self.broker.stop()
        else:
            raise KeyError(name)

    def restart_part(self, name: str) -> None:
        """Start stand-in ``name`` again on its port (after it stopped; blocking). Cosmos DB and Azurite come back
        empty (in memory); the hub re-creates containers and the database as it needs them."""
        self.stop_part(name)
        if name == "token-authority":
            self.authority = TokenAuthorityProcess.start(
                self.authority.directory,
                authority_config(),
                certs_dir=self.directory / "certs",
                port=int(self.authority.url.rsplit(":", 1)[1]),
                federated_tokens={c.client_id: _token_file(self.directory, n) for n, c in SERVICE_CLIENTS.items()},
            )
        elif name == "cosmos":
            self.cosmos = start_cosmos_emulator(
                self.directory / "cosmos", certificates=self.certificates, port=self.cosmos.port
            )
        elif name == "azurite":
            self.azurite.restart()
            self.provision_storage(BLOB_CONTAINER)
        elif name == "servicebus":
            self.broker, _ = _start_broker(self.directory, self.broker_port, self.broker_args)
        else:
            raise KeyError(name)
        self.save()

    def save(self) -> None:
        """Write ``stack.json`` (pids and endpoints)."""
        document = {"pids": self.parts(), "endpoints": self.endpoints()}
        replace_atomically(self.directory / STATE_FILE, json.dumps(document, indent=2).encode(), mode=0o600)

    def stop(self) -> None:
        """Stop every stand-in by its pid (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for name in reversed(self.names()):
            with contextlib.suppress(OSError):
                self.stop_part(name)
        (self.directory / STATE_FILE).unlink(missing_ok=True)

    # -- what the hub is given -------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The v2.0 issuer of the hub's user and service tokens."""
        return self.authority.state.issuer

    @property
    def jwks_uri(self) -> str:
        return self.authority.state.jwks_uri

    @property
    def servicebus_namespace(self) -> str:
        """The broker as a namespace (``127.0.0.1:PORT``: the AMQP connection goes straight to it)."""
        return f"127.0.0.1:{self.broker_port}"

    def servicebus_settings(self, *, namespace: str) -> dict[str, str]:
        """``EXTHUB_AZURE__`` settings naming a namespace of its own on the one broker (the broker keeps one set of
        topics per namespace a client names; the connection still goes to the broker)."""
        return {
            "servicebus_namespace": f"{namespace}.servicebus.windows.net",
            "servicebus_endpoint": f"127.0.0.1:{self.broker_port}",
        }

    def endpoints(self) -> dict[str, str]:
        """Each stand-in's address (for ``endpoints.json`` and people)."""
        return {
            "token_authority": self.authority.url,
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "cosmos": self.cosmos.endpoint,
            "blob": self.azurite.account_url,
            "servicebus": self.servicebus_namespace,
        }

    def hub_environment(self) -> dict[str, str]:
        """``EXTHUB_*`` settings every service of the hub gets on this profile (endpoints and names only)."""
        return {
            "EXTHUB_BACKEND": "azure",
            "EXTHUB_AZURE__COSMOS_ENDPOINT": self.cosmos.endpoint,
            "EXTHUB_AZURE__COSMOS_DATABASE": COSMOS_DATABASE,
            "EXTHUB_AZURE__BLOB_ACCOUNT_URL": self.azurite.account_url,
            "EXTHUB_AZURE__BLOB_CONTAINER": BLOB_CONTAINER,
            "EXTHUB_AZURE__SERVICEBUS_NAMESPACE": self.servicebus_namespace,
            "EXTHUB_AZURE__SERVICE_TOKEN_SCOPE": API_SCOPE,
            "EXTHUB_AUTH__ISSUERS": self.issuer,
            "EXTHUB_AUTH__AUDIENCES": API,
            "EXTHUB_AUTH__JWKS_URI": self.jwks_uri,
        }

    def service_environment(self, service: ServiceName) -> dict[str, str]:
        """The standard variables a workload-identity pod of ``service`` gets, pointing at the local authority."""
        client = SERVICE_CLIENTS[service]
        return self.authority.environment(client.client_id, _token_file(self.directory, service))

    def user_token(self, *, roles: Iterable[str] = (), tenant: str | None = None, user: str, ttl: int = 3600) -> str:
        """A user access token for the hub's API (see :func:`user_token`)."""
        return user_token(self.directory.parent, roles=roles, tenant=tenant, user=user, ttl=ttl)


def user_token(
    data_dir: Path, *, roles: Iterable[str] = (), tenant: str | None = None, user: str, ttl: int = 3600
) -> str:
    """A user token for the hub of ``data_dir`` on the emulator profile (what ``exthub token`` prints).

    Signed by the token authority's key, issued by its one tenant (the issuer the hub trusts); ``tenant`` (the
    ``tid`` the hub reads as the caller's tenant) defaults to that tenant. Works while the hub runs and after it
    stopped (the issuer's port is kept in the data dir).
    """
    directory = data_dir / STACK_DIR / "authority"
    return mint_user_token(
        directory,
        audience=API,
        roles=roles,
        tenant_id=tenant or TENANT_ID,
        issuer_tenant_id=TENANT_ID,
        user_id=user,
        ttl_seconds=ttl,
    )


def has_authority(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an emulator profile's token authority (it ran at least once)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        authority_state(data_dir / STACK_DIR / "authority")
        return True
    return False


def _is_ours(pid: int, marker: str) -> bool:
    """Whether process ``pid`` was started by a stack of this data dir (its command line or environment names the
    stack's directory): a recorded pid the OS has since given to another program is left alone."""
    for name in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            if marker.encode() in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
    return False


def stop_leftovers(data_dir: Path, *, grace_seconds: float = 5.0) -> list[int]:
    """Stop what a killed run of this data dir's stack left running (pids in ``stack.json``); the pids stopped."""
    directory = (data_dir / STACK_DIR).resolve()
    state = directory / STATE_FILE
    try:
        recorded: Any = json.loads(state.read_text(encoding="utf-8"))["pids"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    stopped = []
    for pid in recorded.values() if isinstance(recorded, dict) else ():
        if isinstance(pid, int) and pid > 1 and _is_ours(pid, str(directory)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
    deadline = time.monotonic() + grace_seconds
    for pid in stopped:
        while _is_ours(pid, str(directory)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_ours(pid, str(directory)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    state.unlink(missing_ok=True)
    return stopped
