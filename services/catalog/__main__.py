"""``python -m services.catalog``: run the catalog service until SIGTERM/SIGINT."""

from __future__ import annotations

from services.catalog.app import start_catalog
from services.platform.entrypoint import run_service


def main() -> None:
    """Entry point."""
    run_service("catalog", start_catalog, http_port=lambda settings: settings.catalog_http_port)


if __name__ == "__main__":
    main()
