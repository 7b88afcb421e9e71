"""The one way a service process runs: settings, logging, start, announce, serve until signalled, stop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from services.platform.errors import HubError
from services.platform.logging import configure_logging
from services.platform.server import RunningServer, serve_until_signalled
from services.platform.settings import Settings


class ServiceApp(Protocol):
    """What a started service exposes to its entry point."""

    server: RunningServer

    @property
    def address(self) -> str:
        """``host:port`` of its gRPC server."""
        ...

    async def stop(self, grace: float | None = None) -> None:
        """Drains and releases everything it owns."""
        ...


App = TypeVar("App", bound=ServiceApp)


def run_service(
    name: str,
    start: Callable[[Settings], Awaitable[App]],
    *,
    announce_more: Callable[[App], Iterable[str]] = lambda app: (),
) -> None:
    """Runs one service until SIGTERM/SIGINT. Prints ``<name> serving on <address>`` once ready (the line
    `exthub up` waits for); a configuration, backend or bind problem exits 2 with one line instead of a traceback."""

    async def main() -> None:
        settings = Settings()
        settings.require_backend(name)
        configure_logging(settings)
        app = await start(settings)
        print(f"{name} serving on {app.address}", flush=True)
        for line in announce_more(app):
            print(line, flush=True)
        try:
            await serve_until_signalled(app.server, settings.shutdown_grace_seconds)
        finally:
            await app.stop(0)

    try:
        asyncio.run(main())
    except (HubError, OSError, ValueError) as error:  # e.g. a backend out of reach: one line, not a traceback
        print(f"{name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
