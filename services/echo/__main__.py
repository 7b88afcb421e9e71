"""``python -m services.echo --port N (--jwks-url URL | --jwks-file PATH) [--extension ID ...]``.

Prints the URL it listens on (``http://HOST:PORT``) on a line of its own once it is ready, then serves until
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from services.echo.app import EchoConfig, create_echo_app
from services.echo.signature import FileJwksSource, HttpJwksSource, JwksSource
from services.platform.telemetry import configure_telemetry, shutdown_telemetry


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.echo", description="The Exthub sample extension echo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-url", help="the hub's JWKS, e.g. http://127.0.0.1:8080/v1/signingKeys")
    keys.add_argument("--jwks-file", type=Path, help="a file holding the hub's JWKS")
    parser.add_argument(
        "--extension",
        action="append",
        metavar="ID",
        help="an extension id this server serves (repeatable); requests signed for others are refused "
        "(default: whichever extension a signed request names)",
    )
    return parser.parse_args(argv)


async def serve(host: str, port: int, source: JwksSource, config: EchoConfig | None = None) -> None:
    runner = web.AppRunner(create_echo_app(source, config=config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                bound_port = int(address[1])
                break
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        url_host = f"[{host}]" if ":" in host else host
        print(f"http://{url_host}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    source: JwksSource = HttpJwksSource(args.jwks_url) if args.jwks_url else FileJwksSource(args.jwks_file)
    audiences = frozenset(f"extensions/{extension}" for extension in args.extension) if args.extension else None
    configure_telemetry("echo")  # from the standard OTEL_* variables, like the hub's services
    try:
        asyncio.run(serve(args.host, args.port, source, EchoConfig(audiences=audiences)))
    finally:
        shutdown_telemetry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
