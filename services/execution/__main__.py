"""``python -m services.execution``: run the execution service until SIGTERM/SIGINT."""

from __future__ import annotations

from services.execution.app import start_execution
from services.platform.entrypoint import run_service


def main() -> None:
    """Entry point; also announces the object endpoint's URL."""
    run_service("execution", start_execution, announce_more=lambda app: [f"objects serving on {app.objects_url}"])


if __name__ == "__main__":
    main()
