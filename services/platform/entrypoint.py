"""The one way a service process runs: settings, logging, tracing, start, announce, serve until signalled, stop.

Memory: a service process imports what it serves and nothing else. :func:`run_service` first shuts out the
optional modules that libraries pick up merely because they are installed (:data:`UNUSED_OPTIONAL_MODULES`),
then imports the platform; so this module imports nothing heavy at module level, and a service's
``__main__`` imports its application inside the ``start`` it passes (never at module level), so that both
happen after that step.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from services.platform.server import RunningServer
    from services.platform.settings import Settings

#: Installed for the CLI (typer) and the benchmarks, never used by a service: structlog imports rich when it
#: can (for its console renderer's default traceback formatter and its "pretty" tracebacks), which costs a
#: service about 3 MiB, although our renderers use plain tracebacks and JSON.
UNUSED_OPTIONAL_MODULES = ("rich",)

#: The interpreter options of every service process (``exthub up`` starts them so, and so does the image's
#: ``ENTRYPOINT``): ``-OO`` leaves out docstrings (and ``assert`` statements, which in the services only narrow
#: types), ``-X no_debug_ranges`` the column positions of every code object (line numbers stay in
#: tracebacks). Nothing in a service reads a docstring at run time. Together about 2.9 MiB less RSS per service,
#: most of it the docstrings of the libraries. The byte-compiled files for ``-OO`` are ``*.opt-2.pyc``.
INTERPRETER_OPTIONS = ("-OO", "-X", "no_debug_ranges")


def shut_out_unused_optional_modules() -> None:
    """Make the :data:`UNUSED_OPTIONAL_MODULES` not yet imported fail to import in this process, as if they were
    not installed (libraries import them optionally and fall back). For service processes only."""
    for name in UNUSED_OPTIONAL_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not importable", see importlib


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
    http_port: Callable[[Settings], int] | None = None,
) -> None:
    """Runs one service until SIGTERM/SIGINT. Prints ``<name> serving on <address>`` once ready (the line
    `exthub up` waits for), then ``<name> http serving on <url>``: its HTTP server, which serves ``/metrics``
    (the app's own, ``http_url``, or — with ``http_port`` — a small one started here on that port of the
    settings). A configuration, backend or bind problem exits 2 with one line instead of a traceback. Tracing is
    set up from the standard ``OTEL_*`` variables before the service starts and flushed after it stopped."""
    shut_out_unused_optional_modules()
    import asyncio

    from aiohttp import web

    from services.platform.errors import HubError
    from services.platform.logging import configure_logging
    from services.platform.metrics import HttpServer, add_metrics_route, start_http_server
    from services.platform.server import serve_until_signalled
    from services.platform.settings import Settings
    from services.platform.telemetry import configure_telemetry, shutdown_telemetry

    async def main() -> None:
        settings = Settings()
        settings.require_backend(name)
        configure_logging(settings)
        configure_telemetry(name, azure_monitor=settings.telemetry.azure_monitor)
        http: HttpServer | None = None
        try:
            app = await start(settings)
            try:
                if http_port is not None:
                    metrics_app = web.Application()
                    add_metrics_route(metrics_app, app.server.metrics)
                    http = await start_http_server(settings.host, http_port(settings), metrics_app)
                print(f"{name} serving on {app.address}", flush=True)
                http_url = http.url if http is not None else getattr(app, "http_url", None)
                if isinstance(http_url, str):
                    print(f"{name} http serving on {http_url}", flush=True)
                for line in announce_more(app):
                    print(line, flush=True)
                await serve_until_signalled(app.server, settings.shutdown_grace_seconds)
            finally:
                await app.stop(0)
                if http is not None:
                    await http.stop()
        finally:
            await asyncio.to_thread(shutdown_telemetry)

    try:
        asyncio.run(main())
    except (HubError, OSError, ValueError) as error:  # e.g. a backend out of reach: one line, not a traceback
        print(f"{name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
