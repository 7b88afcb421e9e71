"""Start and stop Azurite 3.37 (the Blob Storage emulator) for the emulator profile and the tests.

Azurite runs from ``node_modules`` (pinned in ``package-lock.json``) as
``node node_modules/azurite/dist/src/blob/main.js --blobHost 127.0.0.1 --blobPort P --oauth basic --cert C
--key K --inMemoryPersistence --disableTelemetry --skipApiVersionCheck``: HTTPS with the development CA's
``127.0.0.1`` certificate and bearer tokens (``--oauth basic``), so user-delegation SAS works exactly as the
production code path uses it. ``--skipApiVersionCheck`` lets the SDK send its own (newer) ``x-ms-version``.
``NODE_EXTRA_CA_CERTS`` makes Azurite trust the CA for the one request it sends itself (it checks a copy
source's SAS by asking itself over HTTPS).

The account is Azurite's built-in ``devstoreaccount1``; the account URL is path-style,
``https://127.0.0.1:PORT/devstoreaccount1``. Development and tests only; never shipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient

from tools.emulators import certs as dev_certs
from tools.emulators._process import REPOSITORY, ChildProcess, EmulatorStartError, spawn

__all__ = ["ACCOUNT", "AZURITE_MAIN", "AzuriteProcess", "create_container"]

ACCOUNT = "devstoreaccount1"
AZURITE_MAIN = REPOSITORY / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
READY_LINE = re.compile(r"successfully listens on https://127\.0\.0\.1:([0-9]+)")
_PROBE_TIMEOUT_SECONDS = 1.0


@dataclass
class AzuriteProcess:
    """A running Azurite blob service (a child process, stopped by its pid)."""

    child: ChildProcess
    port: int
    certificates: dev_certs.DevCertificates
    directory: Path
    location: Path | None

    @property
    def account_url(self) -> str:
        """``https://127.0.0.1:PORT/devstoreaccount1`` (``EXTHUB_AZURE__BLOB_ACCOUNT_URL``)."""
        return f"https://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def pid(self) -> int:
        return self.child.pid

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        certs_dir: Path | None = None,
        port: int = 0,
        location: Path | None = None,
        timeout: float = 60.0,
    ) -> AzuriteProcess:
        """Start Azurite and wait (at most ``timeout`` s) until it accepts connections.

        In memory unless ``location`` names a directory to keep blobs in (then a restart keeps them).
        Blocking: from asyncio use ``asyncio.to_thread``.
        """
        directory.mkdir(parents=True, exist_ok=True)
        certificates = dev_certs.load_or_create(certs_dir or directory / "certs")
        child, bound = _launch(directory, certificates, port, location, timeout)
        return cls(child, bound, certificates, directory, location)

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        """Stop it by its pid (idempotent)."""
        return self.child.stop(grace_seconds)

    def restart(self, timeout: float = 60.0) -> None:
        """Start it again on the same port (after :meth:`stop`); blobs survive only with a ``location``."""
        self.stop()
        self.child, self.port = _launch(self.directory, self.certificates, self.port, self.location, timeout)

    def pause(self) -> None:
        """SIGSTOP: it keeps its port but answers nothing (a hung backend) until :meth:`resume`."""
        os.kill(self.child.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.child.pid, signal.SIGCONT)


def _launch(
    directory: Path, certificates: dev_certs.DevCertificates, port: int, location: Path | None, timeout: float
) -> tuple[ChildProcess, int]:
    node = shutil.which("node")
    if node is None:
        raise EmulatorStartError("Azurite needs Node.js 20 (`node` is not on PATH)")
    if not AZURITE_MAIN.exists():
        raise EmulatorStartError(f"Azurite is not installed ({AZURITE_MAIN} is missing): run scripts/setup.sh")
    argv = [
        node,
        str(AZURITE_MAIN),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--oauth",
        "basic",
        "--cert",
        str(certificates.server_cert),
        "--key",
        str(certificates.server_key),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--silent",
    ]
    if location is None:
        argv.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        argv += ["--location", str(location)]
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(certificates.ca_cert)}
    log_path = directory / "azurite.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    child = spawn("azurite", argv, log_path=log_path, env=env)
    match = child.wait_for_line(READY_LINE, timeout, offset=offset)
    bound = int(match.group(1))
    _wait_accepting(child, bound, timeout)
    return child, bound


def _wait_accepting(child: ChildProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), _PROBE_TIMEOUT_SECONDS):
            return
        if not child.alive() or time.monotonic() >= deadline:
            child.stop(2.0)
            raise EmulatorStartError(f"azurite does not accept connections on {port}:\n{child.log_tail()}")
        time.sleep(0.05)


async def create_container(account_url: str, container: str, credential: AsyncTokenCredential, **options: Any) -> None:
    """Create ``container`` if it does not exist (what Terraform does in Azure), with a bearer token."""
    async with BlobServiceClient(account_url, credential=credential, **options) as service:
        with contextlib.suppress(ResourceExistsError):
            await service.create_container(container)
