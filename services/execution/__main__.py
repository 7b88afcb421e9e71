"""``python -m services.execution``: run the execution service until SIGTERM/SIGINT."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.platform.entrypoint import run_service

if TYPE_CHECKING:
    from services.execution.app import ExecutionApp
    from services.platform.settings import Settings


async def _start(settings: Settings) -> ExecutionApp:
    from services.execution.app import start_execution  # after run_service's set-up (services.platform.entrypoint)

    return await start_execution(settings)


def main() -> None:
    """Entry point; also announces the object endpoint's URL."""
    run_service("execution", _start, announce_more=lambda app: [f"objects serving on {app.objects_url}"])


if __name__ == "__main__":
    main()
