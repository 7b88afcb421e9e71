"""``python -m services.catalog``: run the catalog service until SIGTERM/SIGINT."""

from __future__ import annotations

import gc

from services.catalog.app import CatalogApp, start_catalog
from services.platform.entrypoint import run_service
from services.platform.settings import Settings


async def _start(settings: Settings) -> CatalogApp:
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
