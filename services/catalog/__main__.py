"""``python -m services.catalog``: run the catalog service until SIGTERM/SIGINT."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from services.platform.entrypoint import run_service

if TYPE_CHECKING:
    from services.catalog.app import CatalogApp
    from services.platform.settings import Settings


async def _start(settings: Settings) -> CatalogApp:
    from services.catalog.app import start_catalog  # after run_service's set-up (see services.platform.entrypoint)

    app = await start_catalog(settings)
    # What exists now (modules, the search index loaded at start) lives as long as the process: move it out
    # of the cyclic collector's way, so full collections stop pausing every request to re-scan it.
    gc.collect()
    gc.freeze()
    return app


def main() -> None:
    """Entry point."""
    run_service("catalog", _start, http_port=lambda settings: settings.catalog_http_port)


if __name__ == "__main__":
    main()
