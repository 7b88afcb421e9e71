"""``python -m services.execution``: run the execution service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import sys

from services.execution.app import BackendNotAvailable, start_execution
from services.platform.logging import configure_logging
from services.platform.server import serve_until_signalled
from services.platform.settings import Settings


async def _main() -> None:
    settings = Settings()
    configure_logging(settings)
    app = await start_execution(settings)
    print(f"execution serving on {app.address}", flush=True)
    print(f"objects serving on {app.objects_url}", flush=True)
    try:
        await serve_until_signalled(app.server, settings.shutdown_grace_seconds)
    finally:
        await app.stop(0)


def main() -> None:
    """Entry point: exits with a one-line message instead of a traceback on a configuration problem."""
    try:
        asyncio.run(_main())
    except (BackendNotAvailable, OSError) as error:
        print(f"execution: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
