"""``python -m services.agent``: run the agent until SIGTERM/SIGINT (then drain gracefully)."""

from __future__ import annotations

import asyncio
import sys

from services.agent.app import start_agent
from services.platform.logging import configure_logging
from services.platform.server import serve_until_signalled
from services.platform.settings import Settings


async def _main() -> None:
    settings = Settings()
    configure_logging(settings)
    app = await start_agent(settings)
    print(f"agent serving on {app.address}", flush=True)
    try:
        await serve_until_signalled(app.server, settings.shutdown_grace_seconds)
    finally:
        await app.stop(0)


def main() -> None:
    """Entry point: exits with a one-line message instead of a traceback on a configuration problem."""
    try:
        asyncio.run(_main())
    except (OSError, ValueError) as error:
        print(f"agent: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
