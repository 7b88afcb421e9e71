"""Start and stop the Cosmos DB emulator (``@vercel/cosmosdb-server`` from ``node_modules``) on loopback.

Development and test tooling only, never part of the image. The emulator keeps everything in memory: a
restart starts empty. It is started with ``cosmos_emulator_preload.js`` (``node --require``), which

* makes a read of a missing item answer 404, and item operations on a missing container 404 with substatus
  1003, like Cosmos DB (the emulator answers 500),
* serves the development CA's ``127.0.0.1`` certificate (:mod:`tools.emulators.certs`) instead of the
  emulator's bundled one (expired in 2021),
* with ``faults=True`` only, lets tests inject throttling (429 + ``x-ms-retry-after-ms``) or 5xx answers
  (:meth:`CosmosEmulator.inject_faults`).

The port is chosen by the OS (``-p 0``) unless one is given (a restart on the same port); readiness is the
emulator's "Ready" line followed by a bounded HTTPS probe of ``/``. :meth:`CosmosEmulator.stop` ends exactly
that process, by its pid. The emulator checks no credentials: clients use a token credential as in
production.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.emulators.certs import DevCertificates, load_or_create

__all__ = ["CosmosEmulator", "CosmosEmulatorError", "emulator_binary", "start_cosmos_emulator"]

REPO_ROOT = Path(__file__).resolve().parents[2]
PRELOAD = Path(__file__).resolve().with_name("cosmos_emulator_preload.js")
_READY_RE = re.compile(r"Ready to accept HTTPS connections at 127\.0\.0\.1:(\d+)")
_PROBE_TIMEOUT_SECONDS = 2.0


class CosmosEmulatorError(RuntimeError):
    """The emulator is not installed, exited, or did not become ready in time."""


def emulator_binary(root: Path = REPO_ROOT) -> Path:
    """``node_modules/.bin/cosmosdb-server`` (installed by ``scripts/setup.sh`` from ``package-lock.json``)."""
    path = root / "node_modules" / ".bin" / "cosmosdb-server"
    if not path.exists():
        raise CosmosEmulatorError(f"{path} is missing: run scripts/setup.sh (npm ci installs the Cosmos DB emulator)")
    return path


@dataclass
class CosmosEmulator:
    """A running emulator: its endpoint, the certificates it serves, and how to stop it."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    certificates: DevCertificates
    faults: bool

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:PORT/`` (the account endpoint a Cosmos client is built with)."""
        return f"https://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        """The emulator's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections are accepted by the kernel but never answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused process (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM this emulator (by its pid), SIGKILL if it has not exited within ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)  # a paused process would not see SIGTERM
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=5)

    def inject_faults(self, *, status: int, count: int, retry_after_ms: int = 0, match: str = "/docs") -> None:
        """The next ``count`` requests whose path contains ``match`` fail with ``status`` (faults=True only)."""
        body = {"status": status, "count": count, "retryAfterMs": retry_after_ms, "match": match}
        self._control("POST", body)

    def clear_faults(self) -> None:
        """Stop injecting faults."""
        self._control("DELETE", None)

    def faults_served(self) -> int:
        """How many requests were answered with an injected fault since the last :meth:`inject_faults`."""
        return int(self._control("GET", None)["served"])

    def log_tail(self, size: int = 4000) -> str:
        """The end of the emulator's output (for failure messages)."""
        return _read_text(self.log_path)[-size:]

    def _control(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        if not self.faults:
            raise CosmosEmulatorError("this emulator was started without faults=True")
        status, payload = _request(self.port, self.certificates, method, "/_exthub/faults", body)
        if status != 200:
            raise CosmosEmulatorError(f"fault control answered {status}")
        result: dict[str, Any] = json.loads(payload)
        return result


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _request(
    port: int, certificates: DevCertificates, method: str, path: str, body: dict[str, Any] | None
) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(certificates.ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=_PROBE_TIMEOUT_SECONDS, context=context)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def start_cosmos_emulator(
    workdir: Path,
    *,
    certificates: DevCertificates | None = None,
    port: int = 0,
    faults: bool = False,
    ready_timeout: float = 30.0,
) -> CosmosEmulator:
    """Start the emulator on ``127.0.0.1`` (an OS-chosen port unless ``port`` is given) and wait until it answers.

    ``certificates`` defaults to the development CA in ``workdir/certs``; output goes to
    ``workdir/cosmos-emulator.log``. Raises :class:`CosmosEmulatorError` if it is not ready within
    ``ready_timeout`` seconds (the process is then stopped).
    """
    binary = emulator_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    certs = certificates or load_or_create(workdir / "certs")
    log_path = workdir / "cosmos-emulator.log"
    env = dict(os.environ)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {PRELOAD}".strip()
    env["EXTHUB_COSMOS_TLS_CERT"] = str(certs.server_cert)
    env["EXTHUB_COSMOS_TLS_KEY"] = str(certs.server_key)
    env["EXTHUB_COSMOS_FAULTS"] = "1" if faults else "0"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO_ROOT),
            # its own session: a terminal's Ctrl-C reaches only the parent, which stops the emulator by pid
            start_new_session=True,
        )
    emulator = CosmosEmulator(process=process, port=0, log_path=log_path, certificates=certs, faults=faults)
    try:
        emulator.port = _wait_ready(emulator, time.monotonic() + ready_timeout)
    except BaseException:
        emulator.stop()
        raise
    return emulator


def _wait_ready(emulator: CosmosEmulator, deadline: float) -> int:
    port = 0
    while time.monotonic() < deadline:
        if not emulator.running():
            raise CosmosEmulatorError(
                f"the Cosmos DB emulator exited with {emulator.process.returncode}:\n{emulator.log_tail()}"
            )
        if not port:
            found = _READY_RE.search(_read_text(emulator.log_path))
            port = int(found.group(1)) if found else 0
        if port:
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = _request(port, emulator.certificates, "GET", "/", None)
                if status == 200:
                    return port
        # poll the readiness condition (bounded by the deadline), not a fixed wait
        with contextlib.suppress(subprocess.TimeoutExpired):
            emulator.process.wait(timeout=0.02)
    raise CosmosEmulatorError(f"the Cosmos DB emulator was not ready in time:\n{emulator.log_tail()}")
